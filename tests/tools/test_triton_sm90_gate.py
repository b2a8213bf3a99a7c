"""The sm_90 compile gate (tools/triton_sm90_gate.py): what it selects, how it reads ptxas, what
it fails on, and, compiled for real in a subprocess (no GPU needed), that its offset-width check
catches 32-bit offset arithmetic."""
import importlib.util
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton", reason="the gate needs `pip install triton`")
from tools import gate_specs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "triton_sm90_gate.py"


@pytest.fixture(scope="module")
def gate():
    spec = importlib.util.spec_from_file_location("triton_sm90_gate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PTXAS_LOG = """ptxas info    : Compiling entry function 'k' for 'sm_90a'
ptxas info    : Function properties for k
    48 bytes stack frame, 44 bytes spill stores, 40 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 16384 bytes smem, 432 bytes cmem[0]
"""


def test_reads_registers_spills_and_stack_from_ptxas(gate):
    assert gate.parse_ptxas(PTXAS_LOG) == {"registers": 255, "stack": 48, "spill_stores": 44, "spill_loads": 40}


def test_fails_on_spills_shared_memory_offsets_and_errors(gate):
    clean = {"registers": 128, "stack": 0, "spill_stores": 0, "spill_loads": 0, "shared": 16384, "offsets_ok": True}
    assert gate.failures(clean) == []
    assert gate.failures(dict(clean, spill_loads=4)) == ["spills"]
    assert gate.failures(dict(clean, shared=gate.MAX_SHARED + 1)) == ["shared memory"]
    assert gate.failures(dict(clean, offsets_ok=False)) == ["offset width"]
    assert gate.failures({"error": "CompilationError: ..."}) == ["compile error"]


def test_every_kernel_of_the_package_has_a_spec(gate):
    specs = gate.all_specs()
    assert len({s.name for s in specs}) == len(specs)
    assert gate.undeclared_kernels(specs) == []


def test_an_undeclared_kernel_is_reported(gate, monkeypatch):
    from expandnets_cuda.kernels.triton import conv2d
    specs = [s for s in gate.all_specs() if s.name != "depthwise_fwd_kernel"]
    assert gate.undeclared_kernels(specs) == [f"{conv2d.__name__}.depthwise_fwd_kernel"]


def test_signature_marks_pointers_scalars_and_constexprs(gate):
    spec = next(s for s in gate_specs.SPECS if s.name == "conv2d_wgrad_kernel")
    variant = next(spec.variants(torch.bfloat16))
    sig, attrs = gate.signature(spec, variant)
    assert sig["x"] == sig["dy"] == "*bf16" and sig["dw_part"] == sig["db_part"] == "*fp32"
    assert sig["N"] == sig["sxn"] == "i32" and sig["BM"] == sig["WIDE"] == sig["PRECISION"] == "constexpr"
    assert len(attrs) == 4


def test_quick_set_covers_every_kernel_dtype_and_offset_width(gate):
    variants = [v for s in gate.all_specs() for d in s.dtypes for v in s.variants(d)]
    quick = gate.quick_subset(variants)
    assert len(quick) < len(variants) / 5
    covered = {(v.kernel, v.dtype, v.constexprs.get("WIDE")) for v in quick}
    assert covered == {(s.name, d, w) for s in gate.all_specs() for d in gate.QUICK_DTYPES
                       for w in ((False, True) if "WIDE" in s.jit_function.arg_names else (None,))}
    fp32_conv = {v.constexprs["PRECISION"] for v in quick if v.kernel == "conv2d_fwd_kernel" and v.dtype == torch.float32}
    assert fp32_conv == {"tf32", "ieee"}


CRAFTED = textwrap.dedent('''
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "0"
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from expandnets_cuda.kernels.triton.offsets import widen

    @triton.jit
    def rows_kernel(p, n, stride, WIDE: tl.constexpr):
        n, stride = widen(n, WIDE), widen(stride, WIDE)
        cols = widen(tl.arange(0, 16), WIDE)
        tl.store(p + n * stride + cols, cols.to(tl.float32))

    out = {}
    for wide in (False, True):
        k = triton.compile(ASTSource(fn=rows_kernel, signature={"p": "*fp32", "n": "i32", "stride": "i32",
                                                                "WIDE": "constexpr"}, constexprs={"WIDE": wide}),
                           target=GPUTarget("cuda", 90, 32))
        out[str(wide)] = k.asm["ttir"]
    json.dump(out, sys.stdout)
''')


def test_offset_check_tells_32_from_64_bit_arithmetic(gate, tmp_path):
    """``row * stride`` in int32 wraps past 2**31: the check must reject it for a wide launch
    and accept the widened kernel (and, for a narrow launch, want the 32-bit form)."""
    script = tmp_path / "crafted_kernel.py"  # @triton.jit needs its source in a file
    script.write_text(CRAFTED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ttir = json.loads(done.stdout)
    assert gate.offset_widths(ttir["False"])[0] >= 1  # the int32 product is there to be found
    assert not gate.offsets_ok(True, ttir["False"])
    assert gate.offsets_ok(True, ttir["True"])
    assert gate.offsets_ok(False, ttir["False"]) and not gate.offsets_ok(False, ttir["True"])


def test_gate_compiles_a_project_kernel_for_sm90(tmp_path):
    out = tmp_path / "gate.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--full", "--only", "cl_bias_fold_kernel", "--dtypes", "fp32",
                           "--jobs", "1", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["variants"]
    assert {r["constexprs"]["WIDE"] for r in rows} == {False, True}
    for r in rows:
        assert r["registers"] > 0 and r["spill_stores"] == r["spill_loads"] == 0 and r["offsets_ok"]
    assert "cl_bias_fold_kernel" in done.stdout and "failed=0" in done.stdout
