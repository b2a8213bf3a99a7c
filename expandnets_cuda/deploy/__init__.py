"""After training: export the contracted network to ONNX (``export``, ``python -m
expandnets_cuda.deploy.export``), quantize it (``quantize``), and measure how far two networks'
outputs are apart (``agreement``)."""
