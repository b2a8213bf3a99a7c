#!/usr/bin/env python3
"""sm_90 compile gate for the Triton kernels, on a machine without a GPU.

Compiles every ``*_kernel`` of ``expandnets_cuda.kernels.triton`` for sm_90 (H100) at the
configurations its wrappers can launch it with (``gate_specs.SPECS``: the tile rules and autotune
configs of ``launch_configs``, every input dtype, every mode constexpr), reads registers, spills
and stack from ptxas -v and shared memory from the compiled metadata, and checks that the
``WIDE`` variants do all index arithmetic in int64 (and the others in int32).

    python tools/triton_sm90_gate.py [--quick | --full] [--jobs N] [--json FILE] [--only k1,k2]

``--quick`` (default; CI): per kernel and dtype (fp32, bf16, fp64) the variants with the most
work per thread and the largest tiles, wide and not, every precision. ``--full``: every variant.
Exit status 1 on a compile error, a spill, shared memory over 232448 bytes (H100's opt-in
limit per block), an int32 product in a wide variant, or a kernel that no spec declares.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

if __name__ == "__main__":
    # Compile for real (under the interpreter the kernels are Python functions), into a fresh
    # cache so that every variant runs ptxas and prints its log. (Imported by the tests, the
    # module leaves the environment alone.)
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="triton_sm90_gate_"))
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from expandnets_cuda.kernels import triton as kernel_package  # noqa: E402
from tools import chain_gate, ck_worklist_gate, cl_worklist_gate, gate_specs  # noqa: E402

ARCH = 90
MAX_SHARED = 232448  # bytes a block may opt into on H100
QUICK_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
TRITON_TYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


# ----------------------------------------------------------------------------- what to compile

def kernel_modules():
    for info in pkgutil.iter_modules(kernel_package.__path__):
        yield importlib.import_module(f"{kernel_package.__name__}.{info.name}")


def all_specs():
    """The per-op specs and those of the chain and work-list kernels (each in its own tools module)."""
    return [*gate_specs.SPECS, *chain_gate.GATE_SPECS, *cl_worklist_gate.GATE_SPECS, *ck_worklist_gate.GATE_SPECS]


def undeclared_kernels(specs):
    """``*_kernel`` JIT functions of the package that no spec covers (helpers have other names)."""
    declared = {id(s.jit_function) for s in specs}
    missing = set()
    for module in kernel_modules():
        for name, obj in vars(module).items():
            fn = gate_specs.jit_function(obj)
            if fn is not None and name.endswith("_kernel") and id(fn) not in declared:
                missing.add(f"{fn.fn.__module__}.{fn.__name__}")
    return sorted(missing)


def work(variant):
    tiles = [v for k, v in variant.constexprs.items() if k.startswith("B") and isinstance(v, int)]
    product = 1
    for t in tiles:
        product *= t
    return product


def quick_subset(variants):
    """Per (kernel, dtype, dot precision, offset width): the variants with the most tile work per
    warp and with the largest tiles, where the spill risk is; with a bias."""
    groups = {}
    for v in variants:
        key = (v.kernel, v.dtype, v.constexprs.get("PRECISION"), v.constexprs.get("WIDE"))
        groups.setdefault(key, []).append(v)
    out = []
    for (_, dtype, _, _), vs in groups.items():
        if dtype not in QUICK_DTYPES:
            continue
        vs = [v for v in vs if v.constexprs.get("HAS_BIAS", True)]
        per_warp = max(work(v) / v.num_warps for v in vs)
        largest = max(work(v) for v in vs)
        out.extend(v for v in vs if work(v) / v.num_warps == per_warp or work(v) == largest)
    return out


# ----------------------------------------------------------------------------- compiling

def signature(spec, variant):
    sig, attrs = {}, {}
    for i, param in enumerate(spec.jit_function.arg_names):
        if param in variant.constexprs:
            sig[param] = "constexpr"
        elif param in variant.pointer_dtypes:
            sig[param] = "*" + TRITON_TYPE[variant.pointer_dtypes[param]]
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch's allocations are 16-byte aligned
        else:
            sig[param] = "i32"
    return sig, attrs


def ptxas_log(compiled, captured: str) -> str:
    if "Used" in captured:
        return captured
    # Triton versions that do not print the log: run the bundled ptxas on the PTX ourselves.
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(ARCH).path if callable(get_ptxas) else get_ptxas()[0]
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "kernel.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        return subprocess.run([ptxas, "-v", f"--gpu-name=sm_{ARCH}a", src, "-o", src + ".o"],
                              capture_output=True, text=True).stderr


def parse_ptxas(log: str):
    used = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    out = {"registers": int(used.group(1)) if used else None}
    out["stack"], out["spill_stores"], out["spill_loads"] = map(int, frame.groups()) if frame else (None,) * 3
    return out


INT32_PRODUCT = re.compile(r"arith\.muli .*: (tensor<[0-9x]*xi32>|i32)\b")
ADDPTR_OFFSET = re.compile(r"tt\.addptr .*, (tensor<[0-9x]*x)?(i32|i64)>? ")


def offset_widths(ttir: str):
    """(int32 products, int32 pointer offsets, int64 pointer offsets) in a kernel's TTIR."""
    offsets = [m.group(2) for m in ADDPTR_OFFSET.finditer(ttir)]
    return len(INT32_PRODUCT.findall(ttir)), offsets.count("i32"), offsets.count("i64")


def offsets_ok(wide: bool, ttir: str) -> bool:
    """Wide: no 32-bit product anywhere and every pointer offset 64-bit. Not wide: 32-bit
    offsets only (the small-tensor path pays nothing)."""
    products32, offsets32, offsets64 = offset_widths(ttir)
    return (products32 == 0 and offsets32 == 0) if wide else offsets64 == 0


SPECS_BY_NAME = {}


def compile_variant(variant):
    spec = SPECS_BY_NAME[variant.kernel]
    sig, attrs = signature(spec, variant)
    row = {"kernel": variant.kernel, "dtype": TRITON_TYPE[variant.dtype], "num_warps": variant.num_warps,
           "num_stages": variant.num_stages, "maxnreg": variant.maxnreg,
           "constexprs": {k: (v.name if hasattr(v, "name") and not isinstance(v, (bool, int, str)) else v)
                          for k, v in variant.constexprs.items()}}
    triton.knobs.nvidia.dump_ptxas_log = True
    start, captured = time.time(), io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            compiled = triton.compile(
                ASTSource(fn=spec.jit_function, signature=sig, constexprs=variant.constexprs, attrs=attrs),
                target=GPUTarget("cuda", ARCH, 32),
                options={"num_warps": variant.num_warps, "num_stages": variant.num_stages,
                         "maxnreg": variant.maxnreg})
        row.update(parse_ptxas(ptxas_log(compiled, captured.getvalue())))
        row["shared"] = int(compiled.metadata.shared)
        wide = variant.constexprs.get("WIDE")  # None: a kernel without the switch, not checked
        row["offsets_ok"] = None if wide is None else offsets_ok(bool(wide), compiled.asm["ttir"])
    except Exception as err:  # noqa: BLE001 - a compile error is a result of the gate
        message = str(err).split("Repro command")[0].strip()
        row["error"] = f"{type(err).__name__}: {message[-600:]}"
    row["seconds"] = round(time.time() - start, 2)
    return row


def failures(row):
    if "error" in row:
        return ["compile error"]
    out = []
    if row["registers"] is None:
        out.append("no ptxas report")
    if (row["spill_stores"] or 0) or (row["spill_loads"] or 0):
        out.append("spills")
    if row["shared"] > MAX_SHARED:
        out.append("shared memory")
    if row["offsets_ok"] is False:
        out.append("offset width")
    return out


# ----------------------------------------------------------------------------- report

def table(rows):
    by_kernel = {}
    for r in rows:
        by_kernel.setdefault(r["kernel"], []).append(r)
    lines = [f"{'kernel':28} {'variants':>8} {'regs max':>8} {'spill B':>7} {'stack B':>7} {'smem max':>8}  status",
             "-" * 80]
    for name in sorted(by_kernel):
        rs = by_kernel[name]
        ok = [r for r in rs if "error" not in r]
        bad = sorted({f for r in rs for f in failures(r)})

        def peak(key):
            return max((r[key] or 0 for r in ok), default=0)
        spill = max(((r["spill_stores"] or 0) + (r["spill_loads"] or 0) for r in ok), default=0)
        lines.append(f"{name:28} {len(rs):>8} {peak('registers'):>8} {spill:>7} {peak('stack'):>7} "
                     f"{peak('shared'):>8}  {', '.join(bad) if bad else 'ok'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the reduced set CI runs (default)")
    mode.add_argument("--full", action="store_true", help="every configuration")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="", help="write every compiled variant's figures here")
    ap.add_argument("--only", default="", help="comma-separated kernel names")
    ap.add_argument("--dtypes", default="", help="comma-separated subset of fp32,bf16,fp16,fp64")
    args = ap.parse_args(argv)

    specs = all_specs()
    SPECS_BY_NAME.update({s.name: s for s in specs})
    only = {k for k in args.only.split(",") if k}
    dtypes = {d for d, name in TRITON_TYPE.items() if name in args.dtypes.split(",")} or set(TRITON_TYPE)
    variants = [v for s in specs if not only or s.name in only for d in s.dtypes if d in dtypes
                for v in s.variants(d)]
    if not args.full:
        variants = quick_subset(variants)
    missing = [] if only else undeclared_kernels(specs)
    print(f"triton {triton.__version__}, sm_{ARCH}, {'full' if args.full else 'quick'}: "
          f"{len(variants)} variants of {len({v.kernel for v in variants})} kernels, {args.jobs} jobs", flush=True)
    start = time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(compile_variant, variants, chunksize=1))
    print(table(rows))
    bad = [(r, failures(r)) for r in rows if failures(r)]
    for r, why in bad[:20]:
        print(f"FAIL {r['kernel']} {r['dtype']} warps={r['num_warps']} stages={r['num_stages']} "
              f"{r['constexprs']}: {', '.join(why)} {r.get('error', '')}")
    for name in missing:
        print(f"FAIL {name}: a @triton.jit kernel that no gate spec declares")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "arch": f"sm_{ARCH}", "mode": "full" if args.full else "quick",
                       "max_shared": MAX_SHARED, "undeclared": missing, "variants": rows}, f, indent=1)
    print(f"variants={len(rows)} failed={len(bad)} undeclared={len(missing)} seconds={time.time() - start:.0f}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
