#!/usr/bin/env python3
"""The ptxas resource gate of csrc/: registers, spills and stack frame of every kernel instantiation.

Compiles every csrc/*.cu with nvcc alone (no GPU needed) for sm_80 and sm_90 with ``-Xptxas -v``,
reads what ptxas reports per function (registers, spill stores/loads, stack frame, shared memory),
prints one table row per kernel, writes the figures as JSON, and exits non-zero on a compile error,
on any spill or on any nonzero stack frame (a stack frame lives in local memory: as slow as a spill).

    python3 tools/cuda_ptxas_gate.py                     compile and check (NVCC=..., JOBS=... override)
    python3 tools/cuda_ptxas_gate.py --logs DIR          check nvcc logs already written (*.log in DIR;
                                                           tools/build_cuda_check.sh does this)
    python3 tools/cuda_ptxas_gate.py --json PATH         where the JSON goes (default build/cuda_ptxas_gate.json)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARCHS = ("80", "90")
# The flags of tools/build_cuda_check.sh (torch's extension flags, warnings as errors) plus -v to ptxas.
NVCC_FLAGS = ["-std=c++20", "-O3", "-Icsrc",
              *[f for arch in ARCHS for f in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")],
              "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr",
              "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", "-Xptxas", "-v"]

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_ARCH_LINE = re.compile(r"for 'sm_(\d+)'")


def parse_ptxas(text: str, source: str) -> list[dict]:
    """One record per function ptxas reports in `text` (an nvcc -Xptxas -v log).

    Entry functions (kernels) get registers and shared memory; any other function that ptxas keeps
    as a real call (not inlined) is reported too, since its stack frame and spills count the same."""
    records: dict[tuple[str, str], dict] = {}
    arch = None
    current = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name, arch = m.group(1), m.group(2)
            current = records.setdefault((arch, name), _record(source, arch, name, kernel=True))
            continue
        if m := _ARCH_LINE.search(line):  # "Compiling ... for 'sm_90'" of a non-entry function
            arch = m.group(1)
        if m := _PROPS.search(line):
            if arch is None:
                continue
            name = m.group(1)
            current = records.setdefault((arch, name), _record(source, arch, name, kernel=False))
            continue
        if current is None:
            continue
        if m := _FRAME.search(line):
            current["stack_frame"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        if m := _USED.search(line):
            current["registers"] = int(m.group(1))
            if m := _SMEM.search(line):
                current["smem"] = int(m.group(1))
    return list(records.values())


def _record(source: str, arch: str, mangled: str, kernel: bool) -> dict:
    return {"source": source, "arch": f"sm_{arch}", "mangled": mangled, "kernel": kernel, "registers": None,
            "spill_stores": None, "spill_loads": None, "stack_frame": None, "smem": 0}


def demangle(records: list[dict]) -> None:
    """Adds a short readable `name` (namespaces and parameter lists dropped) to every record."""
    names = [r["mangled"] for r in records]
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    plain = names
    if filt and names:
        out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=False).stdout
        lines = out.splitlines()
        if len(lines) == len(names):
            plain = lines
    for record, name in zip(records, plain):
        record["name"] = short_name(name)


def short_name(name: str) -> str:
    name = name.replace("expandnets::detail::", "").replace("expandnets::", "")
    name = re.sub(r"\b__nv_bfloat16\b", "bf16", name.replace("__half", "half"))
    # Drop the parameter list: the last top-level "(...)" (templates may nest parentheses-free <>).
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            name = name[:i]
            break
    return name.removeprefix("void ").strip()


def violations(records: list[dict]) -> list[str]:
    bad = []
    for r in records:
        if r["stack_frame"] is None:
            bad.append(f"{r['arch']} {r.get('name', r['mangled'])}: ptxas reported no stack/spill figures")
            continue
        if r["spill_stores"] or r["spill_loads"]:
            bad.append(f"{r['arch']} {r['name']}: spills {r['spill_stores']} B stored / {r['spill_loads']} B loaded")
        if r["stack_frame"]:
            bad.append(f"{r['arch']} {r['name']}: {r['stack_frame']} B stack frame")
    return bad


def table(records: list[dict]) -> str:
    """Markdown: one row per kernel, registers per arch, the worst spill/stack over archs, smem."""
    archs = sorted({r["arch"] for r in records})
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        row = rows.setdefault((r["source"], r["name"]), {"source": r["source"], "kernel": r["kernel"], "spill": 0,
                                                         "stack": 0, "smem": 0})
        row[r["arch"]] = r["registers"]
        row["spill"] = max(row["spill"], (r["spill_stores"] or 0) + (r["spill_loads"] or 0))
        row["stack"] = max(row["stack"], r["stack_frame"] or 0)
        row["smem"] = max(row["smem"], r["smem"] or 0)
    head = ["kernel", "file", *[f"regs {a}" for a in archs], "spill B", "stack B", "smem B"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(rows):
        name, row = key[1], rows[key]
        label = name if row["kernel"] else f"{name} (device function)"
        cells = [f"`{label}`", row["source"], *[str(row.get(a, "-")) for a in archs], str(row["spill"]),
                 str(row["stack"]), str(row["smem"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_all(log_dir: pathlib.Path, jobs: int) -> list[str]:
    """nvcc every csrc/*.cu into log_dir/<name>.log; returns the sources that failed to compile."""
    nvcc = os.environ.get("NVCC", "nvcc")
    if shutil.which(nvcc) is None:
        sys.exit("cuda_ptxas_gate: nvcc not found (install the CUDA toolkit or set NVCC=/path/to/nvcc)")
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").glob("*.cu"))

    def one(src: str) -> tuple[str, int]:
        name = pathlib.Path(src).stem
        with open(log_dir / f"{name}.log", "w") as log:
            rc = subprocess.run([nvcc, *NVCC_FLAGS, "-c", src, "-o", str(log_dir / f"{name}.o")], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        return src, rc

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, sources))
    failed = [src for src, rc in results if rc != 0]
    for src in failed:
        print(f"FAIL  {src}")
        log = (log_dir / f"{pathlib.Path(src).stem}.log").read_text()
        print("\n".join("      " + l for l in log.splitlines() if "ptxas info" not in l and "bytes stack" not in l))
    return failed


def check_logs(log_dir: pathlib.Path, json_path: pathlib.Path) -> int:
    logs = sorted(log_dir.glob("*.log"))
    if not logs:
        print(f"cuda_ptxas_gate: no *.log in {log_dir}")
        return 1
    records = []
    for log in logs:
        records += parse_ptxas(log.read_text(), f"{log.stem}.cu")
    if not any(r["kernel"] for r in records):
        print("cuda_ptxas_gate: ptxas reported no kernels (was -Xptxas -v passed?)")
        return 1
    demangle(records)
    print(table(records))
    bad = violations(records)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"records": records, "violations": bad}, indent=1) + "\n")
    kernels = sum(r["kernel"] for r in records)
    worst = max((r["registers"] or 0) for r in records)
    print(f"cuda_ptxas_gate: {kernels} kernel instantiations over {len(logs)} files, "
          f"{', '.join(sorted({r['arch'] for r in records}))}; max {worst} registers; "
          f"{len(bad)} violations (spill or stack frame); JSON in {json_path}")
    for line in bad:
        print(f"  VIOLATION {line}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=pathlib.Path, help="check the nvcc -Xptxas -v logs in this folder")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "build" / "cuda_ptxas_gate.json")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", os.cpu_count() or 2)))
    args = parser.parse_args(argv)
    if args.logs is not None:
        return check_logs(args.logs, args.json)
    with tempfile.TemporaryDirectory() as tmp:
        failed = compile_all(pathlib.Path(tmp), args.jobs)
        status = check_logs(pathlib.Path(tmp), args.json)
    return 1 if failed else status


if __name__ == "__main__":
    sys.exit(main())
