"""Terminal tables, the JSON record and the slowdown plot of a benchmark run."""
from __future__ import annotations

import datetime
import json
import pathlib
import platform
import re
import sys
from typing import Dict, List, Optional

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_TABLES = REPO.parent / "shared" / "paper_tables.json"
# Table S10 keys of the unfused ExpandNets the network benchmark reproduces (r=4).
PAPER_S10 = {("smallnet7", "compact"): "SmallNet_7x7", ("smallnet7", "cl"): "SmallNet_ExpandNet_CL",
             ("smallnet7", "cl+fc"): "SmallNet_ExpandNet_CL_FC", ("smallnet7", "ck"): "SmallNet_ExpandNet_CK",
             ("smallnet7", "ck+fc"): "SmallNet_ExpandNet_CK_FC", ("mobilenet_v2", "compact"): "MobileNetV2",
             ("mobilenet_v2", "cl"): "MobileNetV2_ExpandNet_CL"}


def paper_train_ratio(model: str, form: str) -> Optional[float]:
    """Paper's unfused-ExpandNet/compact training throughput at r=4 (Table S10), if known."""
    if not PAPER_TABLES.exists() or (model, form) not in PAPER_S10:
        return None
    table = json.loads(PAPER_TABLES.read_text())["tableS10_gpu_imgs_per_s_r4"]
    return table[PAPER_S10[model, form]]["train"] / table[PAPER_S10[model, "compact"]]["train"]


def environment(device: torch.device) -> dict:
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device_type": device.type, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["device"] = f"cpu ({info['cpu']}, {info['threads']} threads)"
    return info


def format_layer_rows(rows: List[dict]) -> str:
    lines = [f"{'layer':<52} {'strat':<5} {'r':>3} {'impl':<16} {'fwd ms':>9} {'bwd ms':>9} {'f+b ms':>9} "
             f"{'x compact':>9} {'vs unfused':>10} {'saved MB':>9}"]
    for r in rows:
        lines.append(f"{r['label'][:52]:<52} {r['strategy']:<5} {r['rate']:>3g} {r['impl']:<16} {r['fwd_ms']:9.3f} "
                     f"{r['bwd_ms']:9.3f} {r['fwd_bwd_ms']:9.3f} {r['fwd_bwd_vs_compact']:9.2f} "
                     f"{r['fwd_bwd_speedup_vs_unfused']:9.2f}x {r['saved_bytes'] / 2**20:9.2f}")
    return "\n".join(lines)


def network_ratios(rows: List[dict]) -> List[dict]:
    """Each ExpandNet row with its throughput relative to the compact model of the same run."""
    compact = {r["model"]: r for r in rows if r["variant"] == "compact"}
    out = []
    for r in rows:
        base = compact.get(r["model"])
        ratio = r["images_per_s"] / base["images_per_s"] if base else None
        out.append({**r, "throughput_vs_compact": ratio,
                    "paper_unfused_vs_compact_r4": paper_train_ratio(r["model"], r["form"])})
    return out


def format_network_rows(rows: List[dict]) -> str:
    lines = [f"{'model':<13} {'form':<8} {'r':>3} {'variant':<8} {'step ms':>9} {'img/s':>10} {'x compact':>9} "
             f"{'paper@r4':>8} {'params':>10} {'saved MB':>9}"]
    for r in rows:
        paper = r["paper_unfused_vs_compact_r4"]
        lines.append(f"{r['model']:<13} {r['form']:<8} {r['rate'] or '-':>3} {r['variant']:<8} {r['step_ms']:9.2f} "
                     f"{r['images_per_s']:10.1f} {r['throughput_vs_compact']:9.2f} "
                     f"{(f'{paper:.2f}' if paper and r['variant'] == 'unfused' else ''):>8} {r['params']:>10,} "
                     f"{r['saved_bytes'] / 2**20:9.2f}")
    return "\n".join(lines)


def slug(name: str) -> str:
    """A file-name-safe form of a device name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path: pathlib.Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def plot_slowdown(network_rows: List[dict], path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
    """Training-step slowdown vs the compact model as a function of r, unfused vs fused."""
    curves: Dict[tuple, Dict[float, float]] = {}
    for r in network_rows:
        if r["variant"] == "compact" or r["throughput_vs_compact"] is None:
            continue
        curves.setdefault((r["model"], r["form"], r["variant"]), {})[r["rate"]] = 1 / r["throughput_vs_compact"]
    if not curves:
        return None
    try:
        import matplotlib
    except ImportError:  # e.g. a bare GPU image: the JSON still holds every figure
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, form, variant), points in sorted(curves.items()):
        rates = sorted(points)
        ax.plot(rates, [points[x] for x in rates], marker="o", linestyle="-" if variant == "fused" else "--",
                label=f"{model} {form.upper()} {variant}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("expansion rate r")
    ax.set_ylabel("training step time / compact")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
