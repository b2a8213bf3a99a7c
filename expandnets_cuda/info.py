"""``python -m expandnets_cuda.info`` (or ``expandnets-info``): what this installation runs on.

Prints the versions (python, torch, triton, numpy, CUDA), the devices, how the CUDA extension was
built (or why not), the Triton interpreter setting, the auto-backend cache and the backend table
of ``available_backends()``. ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import sys
from typing import List, Optional

import torch

from expandnets_cuda import __version__
from expandnets_cuda.backends import auto as autotune
from expandnets_cuda.backends import triton_mode
from expandnets_cuda.backends.report import available_backends

BUILD_INFO = pathlib.Path(__file__).with_name("_build_info.json")


def _version(module: str) -> Optional[str]:
    """The version of an installed module, or None; never imports more than that module."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(__import__(module), "__version__", "unknown")
    except Exception as err:  # a broken install is worth reporting, not a traceback
        return f"fails to import ({type(err).__name__}: {err})"


def versions() -> dict:
    return {"expandnets_cuda": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.version.cuda else None,
            "triton": _version("triton"), "numpy": _version("numpy"), "platform": platform.platform()}


def devices() -> List[dict]:
    found = [{"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append({"type": "cuda", "index": index, "name": props.name,
                          "capability": f"{props.major}.{props.minor}",
                          "memory_gib": round(props.total_memory / 2**30, 1)})
    return found


def extension() -> dict:
    """Whether ``expandnets_cuda._C`` is built, and what setup.py decided when it last ran here."""
    spec = importlib.util.find_spec("expandnets_cuda._C")  # absolute: this module also runs as __main__
    info = {"built": spec is not None, "path": spec.origin if spec is not None else None}
    try:
        info["build"] = json.loads(BUILD_INFO.read_text())
    except (OSError, ValueError):
        info["build"] = None  # a plain checkout on PYTHONPATH, never installed or built
    return info


def triton_interpreter() -> dict:
    return {"TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"), "on": triton_mode.interpreter_setting(),
            "kernels": triton_mode.kernel_mode() or "not imported yet"}


def collect() -> dict:
    report = available_backends()
    return {"versions": versions(), "devices": devices(), "cuda_extension": extension(),
            "triton_interpreter": triton_interpreter(),
            "auto_cache": {"path": str(autotune.cache_path()), "exists": autotune.cache_path().exists()},
            "backends": {name: {"available": b.available, "devices": list(b.devices), "reason": b.why_not,
                                "fix": b.fix, "note": b.note} for name, b in report.items()},
            "_table": str(report)}


def _rows(pairs) -> List[str]:
    width = max(len(key) for key, _ in pairs)
    return [f"  {key:<{width}}  {value}" for key, value in pairs]


def format_info(info: dict) -> str:
    v, ext, interp, cache = info["versions"], info["cuda_extension"], info["triton_interpreter"], info["auto_cache"]
    lines = ["Versions"] + _rows([
        ("expandnets_cuda", v["expandnets_cuda"]), ("python", v["python"]),
        ("torch", v["torch"] + (f" (CUDA {v['torch_cuda']}, cuDNN {v['cudnn']})" if v["torch_cuda"] else " (CPU-only build)")),
        ("triton", v["triton"] or "not installed"), ("numpy", v["numpy"] or "not installed"),
        ("platform", v["platform"])])
    lines.append("Devices")
    lines += _rows([(f"{d['type']}" + (f":{d['index']}" if "index" in d else ""),
                     f"{d['name']}, {d['threads']} threads" if d["type"] == "cpu" else
                     f"{d['name']}, compute capability {d['capability']}, {d['memory_gib']} GiB")
                    for d in info["devices"]])
    if len(info["devices"]) == 1:
        lines += _rows([("cuda", "none visible (torch.cuda.is_available() is False)")])
    build = ext["build"] or {}
    if ext["build"] is None:
        configured = "no record (not installed with setup.py)"
    elif build.get("extension_configured"):
        configured = f"configured for TORCH_CUDA_ARCH_LIST={build['arch_list']} with torch {build['torch']}"
    else:
        configured = f"skipped: {build.get('skip_reason')}"
    lines.append("CUDA extension (expandnets_cuda._C)")
    lines += _rows([("built", f"yes: {ext['path']}" if ext["built"] else "no"), ("setup.py", configured)])
    lines.append("Triton interpreter")
    lines += _rows([("TRITON_INTERPRET", "unset" if interp["TRITON_INTERPRET"] is None else repr(interp["TRITON_INTERPRET"])),
                    ("interpreter", "on" if interp["on"] else "off"), ("kernels", interp["kernels"])])
    lines.append("Auto backend cache")
    lines += _rows([("path", cache["path"] + ("" if cache["exists"] else " (not written yet)"))])
    lines.append("Backends (what runs on this machine now)")
    lines += ["  " + line for line in info["_table"].splitlines()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expandnets_cuda.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args(argv)
    info = collect()
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if not k.startswith("_")}, indent=1))
    else:
        print(format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
