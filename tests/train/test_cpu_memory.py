"""``retain_freed_memory``: glibc keeps a freed large block for reuse instead of unmapping it."""
import subprocess
import sys
import textwrap

import pytest

from expandnets_cuda.train import cpu_memory

# A child process frees and re-allocates a block of a large gradient's size (26 MB) and prints
# the page faults of each re-allocation after the first.
_CHILD = textwrap.dedent("""
    import ctypes, resource, sys
    from expandnets_cuda.train.cpu_memory import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory() is True
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 26 << 20, []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(max(faults[1:]))
""")


def _faults_after_first(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not cpu_memory.has_glibc(), reason="needs glibc (Linux): mallopt(3)")
def test_a_freed_gradient_sized_block_is_reused_without_page_faults():
    pages = (26 << 20) // 4096
    if _faults_after_first("default") < pages // 2:
        pytest.skip("this glibc reuses the block by itself: there is nothing for the setting to change")
    assert _faults_after_first("retain") < pages // 20


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), ((32 << 20) + 1, ValueError),
                                        (1.5, TypeError), (True, TypeError), ("32M", TypeError)])
def test_a_bad_threshold_is_refused_naming_the_argument(bad, error):
    with pytest.raises(error, match="mmap_threshold"):
        cpu_memory.retain_freed_memory(bad)


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(cpu_memory, "has_glibc", lambda: False)
    assert cpu_memory.retain_freed_memory() is False
