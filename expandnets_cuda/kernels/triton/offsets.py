"""64-bit-safe element offsets, chosen per launch.

Triton computes ``ptr + i * stride`` in the type of its operands: program ids, ``tl.arange`` and
integer arguments below 2**31 are int32, so a tensor of more than 2**31 elements would be
addressed modulo 2**32, silently. Every kernel takes a ``WIDE`` constexpr: when set (the wrapper
sets it from the extents of the tensors it passes, see ``needs_wide_offsets``), the kernel widens
its program ids and integer arguments to int64 on entry, so that all index arithmetic after that
is 64-bit; when clear (every tensor that fits comfortably in int32) nothing changes and the
kernel keeps its 32-bit arithmetic.
"""
import triton
import triton.language as tl

# Above this many elements a launch uses 64-bit offsets. Half of int32's range, so that offsets a
# masked tile computes past the end of a tensor (up to a tile edge times a stride) stay exact too.
WIDE_ELEMENTS = 1 << 30


def tensor_extent(t) -> int:
    """Elements between a tensor's first and one past its last addressed element."""
    if t is None or t.numel() == 0:
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def needs_wide_offsets(*tensors) -> bool:
    return any(tensor_extent(t) >= WIDE_ELEMENTS for t in tensors)


@triton.jit
def widen(x, WIDE: tl.constexpr):
    """``x`` as int64 on a wide launch, else unchanged."""
    if WIDE:
        return x.to(tl.int64)
    else:
        return x


@triton.jit
def program_ids(WIDE: tl.constexpr):
    """The three program ids, widened like ``widen``."""
    return widen(tl.program_id(0), WIDE), widen(tl.program_id(1), WIDE), widen(tl.program_id(2), WIDE)
