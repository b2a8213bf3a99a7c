"""Cheap checks that the CUDA build stays wired up: every kernel source is compiled by CI's nvcc
check (tools/build_cuda_check.sh, run from .ci/run before the tests), by setup.py and by CMake,
and no kernel depends on torch headers (CI compiles them with nvcc alone)."""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[3]
KERNEL_SOURCES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").glob("*.cu"))


def test_there_are_kernel_sources():
    assert KERNEL_SOURCES, "no csrc/*.cu files"


def test_build_check_covers_every_kernel_source():
    listed = subprocess.run(["bash", "tools/build_cuda_check.sh", "--list"], cwd=ROOT, check=True,
                            capture_output=True, text=True, timeout=60).stdout.split()
    assert listed == KERNEL_SOURCES


def test_ci_compiles_kernels_before_the_tests():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip().startswith(("bash scripts/", "bash tools/"))]
    assert steps.index("bash tools/build_cuda_check.sh") < steps.index("bash scripts/run_tests.sh")


def test_setup_and_cmake_glob_the_kernel_sources():
    assert 'glob.glob(os.path.join(HERE, "csrc", "*.cu"))' in (ROOT / "setup.py").read_text()
    assert "csrc/*.cu" in (ROOT / "CMakeLists.txt").read_text()


def test_setup_builds_every_binding_source():
    assert 'glob.glob(os.path.join(HERE, "csrc", "binding", "*.cpp"))' in (ROOT / "setup.py").read_text()
    assert (ROOT / "csrc" / "binding" / "module.cpp").read_text().count("PyInit__C(") == 1


def test_every_binding_op_is_defined_once_and_implemented_beside_its_definition():
    """The binding is split by op family (csrc/binding/<family>.cpp): an op defined in two files, or
    implemented away from its schema, would register twice or be hard to find."""
    defined, implemented = {}, {}
    for path in sorted((ROOT / "csrc" / "binding").glob("*.cpp")):
        text = path.read_text()
        for name in re.findall(r'm\.def\("(cuda_\w+)\(', text):
            defined.setdefault(name, []).append(path.name)
        for name in re.findall(r'm\.impl\("(cuda_\w+)"', text):
            implemented.setdefault(name, []).append(path.name)
    assert defined, "no m.def in csrc/binding/*.cpp"
    assert all(len(files) == 1 for files in defined.values()), defined
    assert implemented == defined


def test_kernels_include_no_torch_headers():
    pattern = re.compile(r'#include\s*[<"](torch|ATen|c10|pybind11|Python)\b')
    kernel_files = [*(ROOT / "csrc").glob("*.cu"), *(ROOT / "csrc" / "expandnets").iterdir()]
    offenders = [p.name for p in kernel_files if pattern.search(p.read_text())]
    assert not offenders, f"kernel files must compile with nvcc alone: {offenders}"


def test_every_launcher_is_instantiated_for_its_dtypes():
    """Each launcher declared in compose.h, conv.h, worklist.h, ck_worklist.h is instantiated per dtype."""
    expected = {"compose": {"float", "double"}, "conv": {"float", "double", "__half", "__nv_bfloat16"},
                "worklist": {"float", "double"}, "ck_worklist": {"float", "double"}}
    for header, dtypes in expected.items():
        declared = re.findall(r"^\w[\w:]*\s+(\w+)\(", (ROOT / "csrc" / "expandnets" / f"{header}.h").read_text(),
                              re.M)
        assert declared, header
        seen = set()
        for path in (ROOT / "csrc").glob(f"{header}_*.cu"):
            text = path.read_text()
            seen.update(re.findall(r"using T = (\w+);", text))
            missing = [name for name in declared if f"{name}<T>(" not in text]
            assert not missing, f"{path.name} does not instantiate {missing}"
        assert seen == dtypes, header


def test_every_op_family_names_a_python_module_of_the_package():
    # torch imports the module a TORCH_LIBRARY fragment names for the op's fake implementation and
    # refuses a fake registered from any other module: a stale path breaks FakeTensor and compile.
    named = {}
    for source in sorted((ROOT / "csrc" / "binding").glob("*.cpp")):
        for module in re.findall(r'set_python_module\("([\w.]+)"\)', source.read_text()):
            named[source.name] = module
    assert len(named) >= 5, named
    for source, module in named.items():
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"{source} names {module}, which is not a module of the package"
        assert "torch.library.register_fake" in path.read_text(), f"{module} registers no fake implementation"
