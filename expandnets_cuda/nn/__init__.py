"""The drop-in modules: ``FusedExpandConv2d`` and ``FusedExpandLinear`` (``conv``, ``linear``), the
fused unit they share (``unit``), a unit run through chain-fused kernels (``chain``), and the
forward pre-hook that composes every unit of a network once per step (``network``)."""
