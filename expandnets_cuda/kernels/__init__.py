"""The hand-written kernels' Python side: ``triton/`` (the Triton kernels, their launches and op
registrations), ``cuda/`` (the ops of the compiled extension ``expandnets_cuda._C``: fakes,
autograd, work-list layouts), ``stages`` (the composer and convolver both build from their ops)
and ``chain_geometry`` (the chain ops' argument checks and output shapes, shared by both).
Kernel packages import ``backends.types`` / ``backends.triton_mode``, never the registry."""
