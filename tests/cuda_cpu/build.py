"""Builds the csrc/ kernels as host C++ on the cuemu execution layer, with the check driver.

The kernel sources are used as they are, with two mechanical rewrites that plain C++ needs
(applied to a copy under the build folder):
- a launch ``kernel<<<grid, block, smem, stream>>>(args)`` becomes
  ``kernel ->* ::cuemu::launch_config(grid, block, smem, stream)(args)`` (include/cuemu/core.h);
- a declaration ``__shared__ [__align__(n)] TYPE a, b[N];`` becomes one per-block
  ``::cuemu::SharedSlot`` lookup per variable, so every block gets fresh storage of its own.
Every translation unit (one per csrc/*.cu, i.e. per kernel family and dtype, plus the runtime and
the driver) is compiled with AddressSanitizer and UBSan and cached by the hash of what it depends
on, so a rebuild only compiles what changed.

    python3 tests/cuda_cpu/build.py [driver arguments]     build, then run the driver
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CSRC = ROOT / "csrc"
BUILD = pathlib.Path(os.environ.get("CUEMU_BUILD_DIR", ROOT / "build" / "cuda_cpu"))
CXX = os.environ.get("CXX", "g++")
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
# Kernel code is written for nvcc: its pragmas and unsigned builtins are expected here.
FLAGS = ["-std=c++20", "-O1", "-g1", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unknown-pragmas",
         "-Wno-sign-compare", *SANITIZE]
# The kernel families (csrc/<family>_<dtype>.cu) the driver checks.
FAMILIES = ("compose", "conv", "chain", "worklist", "ck_worklist")
HARNESS_SOURCES = ["cuemu_core.cpp", "driver.cpp", "check_cuemu.cpp", "check_compose.cpp", "check_conv.cpp", "check_chain.cpp",
                    "check_worklist.cpp", "check_ck_worklist.cpp", "check_int64.cpp", "check_random.cpp"]


def family_of(source: pathlib.Path) -> str:
    """csrc/<family>_<dtype>.cu -> family (a family name may itself hold underscores: ck_worklist)."""
    return source.stem.rsplit("_", 1)[0]


_LAUNCH_OPEN, _LAUNCH_CLOSE = re.compile(r"<<<"), re.compile(r">>>")
_SHARED = re.compile(r"__shared__\s+(?:__align__\((\d+)\)\s+)?(.*?)\s+"
                     r"(\w+\s*(?:\[[^\]]*\])*(?:\s*,\s*\w+\s*(?:\[[^\]]*\])*)*)\s*;")
_DECLARATOR = re.compile(r"(\w+)\s*((?:\[[^\]]*\])*)")


def rewrite_shared(match: re.Match) -> str:
    align, type_, declarators = match.group(1) or "0", match.group(2), match.group(3)
    out = []
    for name, extent in _DECLARATOR.findall(declarators):
        # Each extent in parentheses: a ">" in one would end the template argument list.
        full_type = type_ + "".join(f"[({e})]" for e in re.findall(r"\[([^\]]*)\]", extent))
        out.append(f"static ::cuemu::SharedSlot cuemu_shared_{name}; "
                   f"auto& {name} = cuemu_shared_{name}.get<{full_type}>({align});")
    return " ".join(out)


def rewrite(text: str) -> tuple[str, int, int]:
    """(rewritten source, launches, __shared__ declarations)."""
    launches = len(_LAUNCH_OPEN.findall(text))
    if launches != len(_LAUNCH_CLOSE.findall(text)):
        raise RuntimeError("unbalanced <<< >>> in a kernel source")
    text = _LAUNCH_OPEN.sub(" ->* ::cuemu::launch_config(", text)
    text = _LAUNCH_CLOSE.sub(")", text)
    text, shared = _SHARED.subn(rewrite_shared, text)
    if "__shared__" in text.replace("// build.py", ""):
        leftover = [line for line in text.splitlines() if "__shared__" in line]
        raise RuntimeError(f"a __shared__ declaration build.py cannot rewrite: {leftover}")
    return text, launches, shared


def kernel_files() -> list[pathlib.Path]:
    return sorted([*CSRC.glob("*.cu"), *(CSRC / "expandnets").glob("*.h"), *(CSRC / "expandnets").glob("*.cuh")])


def prepare_sources(dst: pathlib.Path) -> tuple[int, int]:
    """Rewritten copy of the kernel sources in dst; returns (launch sites, __shared__ declarations)."""
    launches = shared = 0
    for path in kernel_files():
        target = dst / path.relative_to(CSRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        text, n_launch, n_shared = rewrite(path.read_text())
        launches, shared = launches + n_launch, shared + n_shared
        if not target.exists() or target.read_text() != text:  # atomic: a parallel build may be compiling
            tmp = target.with_suffix(f"{target.suffix}.tmp{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(target)
    return launches, shared


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


def compiler_version() -> str:
    return subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def build(jobs: int | None = None, log=print) -> pathlib.Path:
    """Builds (or reuses) the driver; returns its path. Raises CalledProcessError on a compile error."""
    if shutil.which(CXX) is None:
        raise FileNotFoundError(f"C++ compiler {CXX!r} not found")
    src_dir = BUILD / "src"
    launches, shared = prepare_sources(src_dir)
    if launches == 0 or shared == 0:
        raise RuntimeError("no kernel launches or __shared__ declarations found in csrc/: the rewrite is broken")
    include = HERE / "include"
    # the harness headers (harness.h, fold_reference.h) too: a change to them must recompile the checks
    headers = sorted([*include.rglob("*.h"), *HERE.glob("*.h"), *(src_dir / "expandnets").iterdir()])
    header_bytes = b"".join(p.read_bytes() for p in headers)
    flags = [*FLAGS, f"-I{include}", f"-I{src_dir}"]
    common = " ".join(flags).encode() + compiler_version().encode() + header_bytes
    units = [(HERE / name, []) for name in HARNESS_SOURCES]
    units += [(p, ["-x", "c++"]) for p in sorted(src_dir.glob("*.cu")) if family_of(p) in FAMILIES]
    obj_dir = BUILD / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(unit) -> pathlib.Path:
        source, lang = unit
        obj = obj_dir / f"{source.stem}-{_digest(common, source.read_bytes())}.o"
        if not obj.exists():
            tmp = obj.with_suffix(f".tmp{os.getpid()}")
            subprocess.run([CXX, *flags, *lang, "-c", str(source), "-o", str(tmp)], check=True, capture_output=True,
                           text=True)
            tmp.replace(obj)
            log(f"compiled {source.name}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, units))
    exe = BUILD / f"cuda_cpu_driver-{_digest(*(o.name.encode() for o in objects))}"
    if not exe.exists():
        tmp = exe.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([CXX, *SANITIZE, *map(str, objects), "-o", str(tmp)], check=True, capture_output=True, text=True)
        tmp.replace(exe)
        log(f"linked {exe.name}")
    return exe


# What the driver runs under: stop at the first report, leaks included.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=1:"
                    "check_initialization_order=1:strict_string_checks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


def main(argv: list[str]) -> int:
    try:
        exe = build()
    except subprocess.CalledProcessError as err:
        sys.stderr.write(err.stderr or "")
        return 1
    return subprocess.run([str(exe), *argv], env={**os.environ, **SANITIZER_ENV}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
