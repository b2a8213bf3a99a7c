"""The ptxas gate (tools/cuda_ptxas_gate.py, run by tools/build_cuda_check.sh in CI) reads
what it must and fails where it must: on a spill, on a stack frame, on a log without figures."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("cuda_ptxas_gate", ROOT / "tools" / "cuda_ptxas_gate.py")
gate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate)

KERNEL = "_ZN10expandnets6detail17cl_forward_kernelIdEEvPKT_S4_S4_PS2_NS_7ClShapeE"


def _log(arch, frame, stores, loads, regs=90):
    return (f"ptxas info    : Compiling entry function '{KERNEL}' for 'sm_{arch}'\n"
            f"ptxas info    : Function properties for {KERNEL}\n"
            f"    {frame} bytes stack frame, {stores} bytes spill stores, {loads} bytes spill loads\n"
            f"ptxas info    : Used {regs} registers, used 1 barriers, 25344 bytes smem, 432 bytes cmem[0]\n")


def _records(text):
    records = gate.parse_ptxas(text, "compose_f64.cu")
    gate.demangle(records)
    return records


def test_parses_registers_spills_stack_and_smem_per_arch():
    records = _records(_log(80, 0, 0, 0, regs=104) + _log(90, 0, 0, 0, regs=91))
    assert [(r["arch"], r["registers"], r["smem"], r["stack_frame"]) for r in records] == [
        ("sm_80", 104, 25344, 0), ("sm_90", 91, 25344, 0)]
    assert records[0]["name"] == "cl_forward_kernel<double>"
    assert gate.violations(records) == []
    assert "| `cl_forward_kernel<double>` | compose_f64.cu | 104 | 91 | 0 | 0 | 25344 |" in gate.table(records)


def test_a_spill_or_a_stack_frame_is_a_violation():
    bad = gate.violations(_records(_log(80, 16, 48, 32) + _log(90, 8, 0, 0)))
    assert bad == ["sm_80 cl_forward_kernel<double>: spills 48 B stored / 32 B loaded",
                   "sm_80 cl_forward_kernel<double>: 16 B stack frame",
                   "sm_90 cl_forward_kernel<double>: 8 B stack frame"]


def test_a_kernel_without_figures_is_a_violation(tmp_path):
    text = f"ptxas info    : Compiling entry function '{KERNEL}' for 'sm_90'\n"
    assert gate.violations(_records(text))
    (tmp_path / "x.log").write_text("nothing from ptxas\n")
    assert gate.check_logs(tmp_path, tmp_path / "out.json") == 1


def test_build_check_runs_the_gate_on_its_logs():
    script = (ROOT / "tools" / "build_cuda_check.sh").read_text()
    assert "-Xptxas -v" in script and "tools/cuda_ptxas_gate.py --logs" in script
