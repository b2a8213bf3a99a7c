"""Terminal tables, the JSON record and the slowdown plot of a benchmark run."""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from expandnets_cuda.timing import SPREAD_WARNING, paired_ratio
from expandnets_cuda.train.cpu_memory import allocator_settings

REPO = pathlib.Path(__file__).resolve().parents[1]
IN_CHECKOUT = (REPO / "setup.py").exists()  # False when installed as expandnets_cuda.bench
# The paper's figures, printed beside the measured ones (a data file of this package).
PAPER_TABLES = pathlib.Path(os.environ.get("EXPANDNETS_PAPER_TABLES") or pathlib.Path(__file__).with_name("paper_tables.json"))
# Table S10 keys of the unfused ExpandNets the network benchmark reproduces (r=4).
PAPER_S10 = {("smallnet7", "compact"): "SmallNet_7x7", ("smallnet7", "cl"): "SmallNet_ExpandNet_CL",
             ("smallnet7", "cl+fc"): "SmallNet_ExpandNet_CL_FC", ("smallnet7", "ck"): "SmallNet_ExpandNet_CK",
             ("smallnet7", "ck+fc"): "SmallNet_ExpandNet_CK_FC", ("mobilenet_v2", "compact"): "MobileNetV2",
             ("mobilenet_v2", "cl"): "MobileNetV2_ExpandNet_CL", ("mobilenet_v1", "compact"): "MobileNet",
             ("mobilenet_v1", "cl"): "MobileNet_ExpandNet_CL", ("shufflenet_v2_x0_5", "compact"): "ShuffleNetV2_0.5x",
             ("shufflenet_v2_x0_5", "cl"): "ShuffleNetV2_0.5x_ExpandNet_CL"}


def paper_train_ratio(model: str, form: str) -> Optional[float]:
    """Paper's unfused-ExpandNet/compact training throughput at r=4 (Table S10), if known."""
    if not PAPER_TABLES.exists() or (model, form) not in PAPER_S10:
        return None
    table = json.loads(PAPER_TABLES.read_text())["tableS10_gpu_imgs_per_s_r4"]
    return table[PAPER_S10[model, form]]["train"] / table[PAPER_S10[model, "compact"]]["train"]


def environment(device: torch.device, argv: Optional[Sequence[str]] = None, module: str = "bench.run") -> dict:
    """Device, versions, thread count, date and the exact command of a run."""
    command = (f"python -m {module} " + shlex.join(argv)).strip() if argv is not None else shlex.join(sys.argv)
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device_type": device.type, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "allocator": allocator_settings()}
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


def _spread(row: dict, key: str) -> str:
    """``±IQR%`` of a timing, with ``!`` where it exceeds the noise threshold."""
    spread = row.get(f"{key}_spread")
    if spread is None:
        return ""
    return f"±{100 * spread:.0f}%" + ("!" if spread > SPREAD_WARNING else "")


Column = Tuple[str, str, Callable[[dict], str]]  # header, alignment + width ("<46"), cell text


def _table(rows: List[dict], columns: Sequence[Column]) -> str:
    lines = [" ".join(f"{header:{spec}}" for header, spec, _ in columns)]
    lines += [" ".join(f"{cell(r):{spec}}" for _, spec, cell in columns) for r in rows]
    return "\n".join(lines)


def _layer_columns(rows: List[dict]) -> List[Column]:
    """Label and implementation columns as wide as their longest entry: nothing is cut."""
    label = max([len("layer"), *(len(r["label"]) for r in rows)])
    impl = max([len("impl"), *(len(r["impl"]) for r in rows)])
    return [("layer", f"<{label}", lambda r: r["label"]), ("strat", "<5", lambda r: r["strategy"]),
            ("r", ">3", lambda r: f"{r['rate']:g}"), ("impl", f"<{impl}", lambda r: r["impl"])]


def _saved_mb(r: dict) -> str:
    return f"{r['saved_bytes'] / 2**20:.2f}"


def format_layer_rows(rows: List[dict]) -> str:
    return _table(rows, _layer_columns(rows) + [
        ("fwd ms", ">8", lambda r: f"{r['fwd_ms']:.3f}"), ("bwd ms", ">8", lambda r: f"{r['bwd_ms']:.3f}"),
        ("f+b ms", ">8", lambda r: f"{r['fwd_bwd_ms']:.3f}"), ("spread", ">7", lambda r: _spread(r, "fwd_bwd")),
        ("x compact", ">9", lambda r: f"{r['fwd_bwd_vs_compact']:.2f}"),
        ("vs unfused", ">10", lambda r: f"{r['fwd_bwd_speedup_vs_unfused']:.2f}x"), ("saved MB", ">8", _saved_mb)])


def format_nonlinear_rows(rows: List[dict]) -> str:
    return _table(rows, _layer_columns(rows) + [
        ("f+b ms", ">8", lambda r: f"{r['fwd_bwd_ms']:.3f}"), ("spread", ">7", lambda r: _spread(r, "fwd_bwd")),
        ("vs unfused", ">10", lambda r: f"{r['fwd_bwd_speedup_vs_unfused']:.2f}x"), ("saved MB", ">8", _saved_mb),
        ("saved x", ">7", lambda r: f"{r['saved_vs_unfused']:.2f}")])


FUSED_VARIANTS = ("fused", "fused-compile")  # the library's model, eager and handed to torch.compile


def _is_compiled(variant: str) -> bool:
    return variant.endswith("compile")


def network_ratios(rows: List[dict]) -> List[dict]:
    """Each row with its throughput relative to the compact model of the same round-robin; fused
    rows (eager and compiled) also with their speed-up over the unfused chain, over the strongest
    peer of any kind, and over the strongest peer of their own kind (eager or compiled)."""
    compact = {r["model"]: r for r in rows if r["variant"] == "compact"}
    by_key: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["model"], r["form"], r["rate"]), {})[r["variant"]] = r
    out = []
    for r in rows:
        base = compact.get(r["model"])
        row = {**r, "throughput_vs_compact": r["images_per_s"] / base["images_per_s"] if base else None,
               "saved_vs_compact": r["saved_bytes"] / base["saved_bytes"] if base and base["saved_bytes"] else None,
               "paper_unfused_vs_compact_r4": paper_train_ratio(r["model"], r["form"]) if r["rate"] == 4 else None}
        if r["variant"] in FUSED_VARIANTS:
            group = by_key[r["model"], r["form"], r["rate"]]
            unfused = group.get("unfused")
            row["speedup_vs_unfused"] = unfused["step_ms"] / r["step_ms"] if unfused else None
            peers = {name: v for name, v in group.items() if name not in (*FUSED_VARIANTS, "unfused", "compact")}
            if peers:
                best = min(peers, key=lambda name: peers[name]["step_ms"])
                row["best_peer"], row["speedup_vs_best_peer"] = best, peers[best]["step_ms"] / r["step_ms"]
                row["per_round_vs_best_peer"] = _per_round(peers[best], r)
            like = {n: v for n, v in peers.items() if _is_compiled(n) == _is_compiled(r["variant"])}
            if like:
                best = min(like, key=lambda name: like[name]["step_ms"])
                row["best_like_peer"], row["speedup_vs_best_like_peer"] = best, like[best]["step_ms"] / r["step_ms"]
        out.append(row)
    return out


def _per_round(peer: dict, fused: dict) -> Optional[dict]:
    """Peer time / fused time round by round (both from one round-robin): median, quartiles and
    verdict (``timing.PairedRatio``); ``None`` for rows without their samples."""
    a, b = peer.get("step_samples_ms"), fused.get("step_samples_ms")
    if not a or not b or len(a) != len(b):
        return None
    return paired_ratio(a, b).as_dict()


# How the per-round verdict reads from the fused model's side.
FUSED_VERDICT = {"above": "faster", "below": "slower", "parity": "parity"}


def _per_round_text(per_round: Optional[dict]) -> str:
    if not per_round:
        return ""
    return (f"per round {per_round['median']:.2f}x ({per_round['q1']:.2f}-{per_round['q3']:.2f}, "
            f"{FUSED_VERDICT[per_round['verdict']]})")


def _best_fused(rows: List[dict]) -> Dict[tuple, dict]:
    """Per (model, form, rate): the fused row (eager or compiled) with the larger speed-up over the
    strongest peer of any kind, as the headline picks it."""
    best: Dict[tuple, dict] = {}
    for r in rows:
        if r["variant"] in FUSED_VARIANTS and r.get("speedup_vs_best_peer"):
            key = (r["model"], r["form"], r["rate"])
            if key not in best or r["speedup_vs_best_peer"] > best[key]["speedup_vs_best_peer"]:
                best[key] = r
    return best


def format_peer_grid(network_rows: List[dict]) -> str:
    """The best fused model (the headline's) against the strongest peer, one line per model and
    form, one cell per rate: the per-round ratio peer / fused with its quartiles and verdict
    (faster: fused faster in at least three rounds in four; parity: the quartiles straddle 1);
    ``[compiled]`` where the compiled fused model is the better one, against its peer."""
    cells: Dict[tuple, Dict[float, str]] = {}
    for (model, form, rate), r in _best_fused(network_rows).items():
        p = r.get("per_round_vs_best_peer")
        if not p:
            continue
        compiled = " [compiled]" if _is_compiled(r["variant"]) else ""
        cells.setdefault((model, form), {})[rate] = (
            f"{p['median']:.2f} ({p['q1']:.2f}-{p['q3']:.2f}) {FUSED_VERDICT[p['verdict']]}{compiled}")
    if not cells:
        return ""
    rates = sorted({rate for row in cells.values() for rate in row})
    width = max(len(c) for row in cells.values() for c in row.values())
    lines = [f"{'model':<13} {'form':<8} " + " ".join(f"{'r=' + format(rate, 'g'):<{width}}" for rate in rates)]
    for (model, form), row in cells.items():
        lines.append(f"{model:<13} {form:<8} " + " ".join(f"{row.get(rate, '-'):<{width}}" for rate in rates))
    return "\n".join(lines)


def _paper(r: dict) -> str:
    paper = r["paper_unfused_vs_compact_r4"]
    return f"{paper:.2f}" if paper and r["variant"] == "unfused" else ""


def format_network_rows(rows: List[dict]) -> str:
    return _table(rows, [
        ("model", "<13", lambda r: r["model"]), ("form", "<8", lambda r: r["form"]),
        ("r", ">3", lambda r: f"{r['rate']:g}" if r["rate"] else "-"), ("variant", "<9", lambda r: r["variant"]),
        ("step ms", ">9", lambda r: f"{r['step_ms']:.2f}"), ("spread", ">7", lambda r: _spread(r, "step")),
        ("img/s", ">9", lambda r: f"{r['images_per_s']:.1f}"),
        ("x compact", ">9", lambda r: f"{r['throughput_vs_compact']:.2f}"), ("paper@r4", ">8", _paper),
        ("params", ">10", lambda r: f"{r['params']:,}"), ("saved MB", ">8", _saved_mb),
        ("launches", ">8", lambda r: str(r.get("launches") or "-"))])


def headline(network_rows: List[dict]) -> str:
    """One line per model, form and rate: fused vs compact, vs unfused, vs the peers (eager fused
    against eager peers, the compiled fused model against compiled ones, and the faster of the two
    against the strongest peer of any kind), memory."""
    compact_params = {r["model"]: r["params"] for r in network_rows if r["variant"] == "compact"}
    compact_launches = {r["model"]: r.get("launches") for r in network_rows if r["variant"] == "compact"}
    compiled = {(r["model"], r["form"], r["rate"]): r for r in network_rows if r["variant"] == "fused-compile"}
    lines = []
    for r in network_rows:
        if r["variant"] != "fused":
            continue
        label = f"  {r['model']} {r['form'].upper()} r={r['rate']:g}:"
        if r["params"] == compact_params.get(r["model"]):
            lines.append(f"{label} nothing to expand (the compact network)")
            continue
        parts = [f"fused trains at {r['throughput_vs_compact']:.2f}x the compact network's speed"]
        if r.get("speedup_vs_unfused"):
            parts.append(f"{r['speedup_vs_unfused']:.2f}x the unfused chain's")
        if r.get("best_like_peer"):
            parts.append(f"{r['speedup_vs_best_like_peer']:.2f}x {r['best_like_peer']}'s")
        twin = compiled.get((r["model"], r["form"], r["rate"]))
        if twin and twin.get("best_like_peer"):
            parts.append(f"compiled {twin['speedup_vs_best_like_peer']:.2f}x {twin['best_like_peer']}'s")
        best = _best_fused([x for x in (r, twin) if x]).get((r["model"], r["form"], r["rate"]))
        if best is not None:
            per_round = _per_round_text(best.get("per_round_vs_best_peer"))
            parts.append(f"best fused ({best['variant']}) {best['speedup_vs_best_peer']:.2f}x the strongest peer "
                         f"({best['best_peer']})" + (f", {per_round}" if per_round else ""))
        if r.get("saved_vs_compact"):
            parts.append(f"uses {r['saved_vs_compact']:.2f}x the compact network's memory for backward")
        if r.get("launches") and compact_launches.get(r["model"]):
            parts.append(f"{r['launches']} launches per step (compact {compact_launches[r['model']]})")
        noisy = "  [noisy: spread > 10%]" if r.get("noisy") or (twin and twin.get("noisy")) else ""
        lines.append(f"{label} " + ", ".join(parts) + noisy)
    return "\n".join(lines)


def slug(name: str) -> str:
    """A file-name-safe form of a device name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path: pathlib.Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


FORM_COLOURS = {"cl": "tab:blue", "ck": "tab:orange", "cl+fc": "tab:green", "ck+fc": "tab:red", "fc": "tab:purple"}
VARIANT_STYLES = {"fused": dict(linestyle="-", marker="o"), "unfused": dict(linestyle="--", marker="s"),
                  "collapse": dict(linestyle=":", marker="^"), "compile": dict(linestyle="-.", marker="v"),
                  "collapse-compile": dict(linestyle=":", marker="v"),
                  "fused-compile": dict(linestyle="-", marker="D")}


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # e.g. a bare GPU image: the JSON still holds every figure
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _log_y(ax) -> None:
    """Log scale with plain numbers (0.5, 1, 2) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _save(plt, fig, path: pathlib.Path, title: str) -> pathlib.Path:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rate_axis(ax, rates) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates)
    ax.set_xticklabels([f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("expansion rate r")


def plot_networks(network_rows: List[dict], path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
    """Step time / compact vs r; a colour per form, a line style per variant (fused solid)."""
    compact_params = {r["model"]: r["params"] for r in network_rows if r["variant"] == "compact"}
    curves: Dict[tuple, Dict[float, float]] = {}
    for r in network_rows:
        expanded = r["params"] != compact_params.get(r["model"])  # a form that expands nothing has no curve
        if r["variant"] != "compact" and r.get("throughput_vs_compact") and expanded:
            curves.setdefault((r["model"], r["form"], r["variant"]), {})[r["rate"]] = 1 / r["throughput_vs_compact"]
    models = sorted({model for model, _, _ in curves})
    plt = _pyplot() if curves else None
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rates = sorted({rate for (m, _, _), pts in curves.items() if m == model for rate in pts})
        order = list(FORM_COLOURS), list(VARIANT_STYLES)
        for (m, form, variant), points in sorted(curves.items(), key=lambda item: (
                order[0].index(item[0][1]) if item[0][1] in order[0] else 99,
                order[1].index(item[0][2]) if item[0][2] in order[1] else 99)):
            if m != model:
                continue
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], color=FORM_COLOURS.get(form, "gray"),
                    label=f"{form.upper()} {variant}", **VARIANT_STYLES.get(variant, {}))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.text(rates[-1], 1.0, "compact ", va="bottom", ha="right", fontsize=8)
        _rate_axis(ax, rates)
        _log_y(ax)
        ax.set_ylabel("training step time / compact (lower is better)")
        ax.set_title(f"{model}: fused solid, unfused dashed, peers dotted", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path, title)


def plot_layers(layer_rows: List[dict], path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
    """Per strategy: geometric mean over layers of fwd+bwd time / compact vs r, one line per implementation."""
    import math
    groups: Dict[tuple, List[float]] = {}
    for r in layer_rows:
        if r["impl"] != "compact":
            groups.setdefault((r["strategy"], r["impl"], r["rate"]), []).append(math.log(r["fwd_bwd_vs_compact"]))
    strategies = sorted({s for s, _, _ in groups})
    plt = _pyplot() if groups else None
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(strategies), figsize=(6 * len(strategies), 4.5), squeeze=False)
    for ax, strategy in zip(axes[0], strategies):
        colour = FORM_COLOURS.get(strategy, "gray")
        impls = sorted({impl for s, impl, _ in groups if s == strategy},
                       key=lambda impl: (impl != "unfused", impl != "fused[auto]", not impl.startswith("fused"), impl))
        rates = sorted({rate for s, _, rate in groups if s == strategy})
        for impl in impls:
            xs = [rate for rate in rates if (strategy, impl, rate) in groups]
            ys = [math.exp(sum(groups[strategy, impl, x]) / len(groups[strategy, impl, x])) for x in xs]
            variant = "fused" if impl.startswith("fused") else impl
            style = dict(VARIANT_STYLES.get(variant, {}))
            shade = colour if variant in ("fused", "unfused") else "gray"
            if impl.startswith("fused") and impl != "fused[auto]":
                style["linewidth"], style["alpha"] = 1, 0.5
            ax.plot(xs, ys, color=shade, label=impl, **style)
        ax.axhline(1.0, color="black", linewidth=0.8)
        _rate_axis(ax, rates)
        _log_y(ax)
        ax.set_ylabel("fwd+bwd time / compact conv (geo. mean)")
        n_layers = len({(r["label"]) for r in layer_rows if r["strategy"] == strategy})
        ax.set_title(f"{strategy.upper()} layers ({n_layers}): fused solid, unfused dashed, peers gray", fontsize=9)
        ax.legend(fontsize=7)
    return _save(plt, fig, path, title)


def _ratio(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None and value == value else "-"  # None, NaN: no figure


def _worst_spread(r: dict) -> str:
    """The largest spread of the point's four timings (``!`` over 10%)."""
    spreads = [r.get(f"{v}_spread") for v in ("compact", "fused", "unfused", "collapse")]
    spreads = [s for s in spreads if s is not None]
    return _spread({"worst_spread": max(spreads)}, "worst") if spreads else ""


def format_scaling_rows(rows: List[dict]) -> str:
    """One line per scaling point (bench/scaling.py): step times and the ratios to compact."""
    model = max([len("model"), *(len(r["model"]) for r in rows)])
    return _table(rows, [
        ("model", f"<{model}", lambda r: r["model"]), ("form", "<4", lambda r: r["form"]),
        ("batch", ">5", lambda r: str(r["batch"])), ("px", ">4", lambda r: str(r["image_size"])),
        ("compact ms", ">10", lambda r: f"{r['compact_ms']:.2f}"), ("fused ms", ">9", lambda r: f"{r['fused_ms']:.2f}"),
        ("fused/c", ">7", lambda r: _ratio(r["fused_vs_compact"])),
        ("unfused/c", ">9", lambda r: _ratio(r["unfused_vs_compact"])),
        ("collapse/c", ">10", lambda r: _ratio(r["collapse_vs_compact"])),
        ("floor/c", ">7", lambda r: _ratio(r["floor_vs_compact"])), ("spread", ">7", _worst_spread),
        ("paper unfused/c", ">15", _paper_unfused_time)])


def _paper_unfused_time(r: dict) -> str:
    """The paper's unfused / compact step time at r=4 (Table S10, GPUs; 1 / its throughput ratio)."""
    ratio = paper_train_ratio(r["model"], r["form"]) if r.get("rate", 4.0) == 4.0 else None
    return f"{1 / ratio:.2f}" if ratio else ""


SCALING_SERIES = (("fused", "tab:blue", VARIANT_STYLES["fused"]), ("unfused", "tab:orange", VARIANT_STYLES["unfused"]),
                  ("collapse", "tab:green", VARIANT_STYLES["collapse"]),
                  ("floor", "black", dict(linestyle="-.", marker="x", linewidth=1)))
SCALING_LABELS = {"collapse": "collapse (peer)", "floor": "fused roofline floor"}


def _scaling_panels(rows: List[dict]) -> List[tuple]:
    """(kind, form or batch, rows) per panel: SmallNet vs batch at 32 px and vs pixels at batch 32,
    one panel per form each, where a sweep has two points or more; the ImageNet nets per batch.
    Ordered for a grid: the batch sweeps and the first ImageNet panel, then the size sweeps and the rest."""
    sweeps: Dict[str, list] = {"batch": [], "px": []}
    small = [r for r in rows if r["model"].startswith("smallnet")]
    for kind, fixed, x_key in (("batch", ("image_size", 32), "batch"), ("px", ("batch", 32), "image_size")):
        for form in sorted({r["form"] for r in small}, key=lambda f: (f != "cl", f)):
            sweep = sorted((r for r in small if r["form"] == form and r[fixed[0]] == fixed[1]), key=lambda r: r[x_key])
            if len({r[x_key] for r in sweep}) >= 2:
                sweeps[kind].append((kind, form, sweep))
    others = [r for r in rows if not r["model"].startswith("smallnet")]
    imagenet = [("imagenet", batch, [r for r in others if r["batch"] == batch])
                for batch in sorted({r["batch"] for r in others})]
    return sweeps["batch"] + imagenet[:1] + sweeps["px"] + imagenet[1:]


def plot_scaling(scaling_rows: List[dict], path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
    """Step time / compact of fused, unfused, the collapse peer and the fused roofline floor: vs
    batch and vs image size (SmallNet, a panel per form, log x) and as bars per ImageNet network."""
    panels = _scaling_panels(scaling_rows)
    plt = _pyplot() if panels else None
    if plt is None:
        return None
    columns = len(panels) if len(panels) <= 3 else (len(panels) + 1) // 2
    grid_rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(grid_rows, columns, figsize=(5 * columns, 4.2 * grid_rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (kind, key, rows) in zip(axes.flat, panels):
        if kind == "imagenet":
            width = 0.8 / len(SCALING_SERIES)
            for i, (series, colour, _) in enumerate(SCALING_SERIES):
                values = [r.get(f"{series}_vs_compact") for r in rows]
                xs = [j + (i - (len(SCALING_SERIES) - 1) / 2) * width for j, v in enumerate(values) if v]
                heights = [v - 1 for v in values if v]
                if xs:  # bars from 1 (the compact network) up or down
                    ax.bar(xs, heights, width, bottom=1, color=colour, label=SCALING_LABELS.get(series, series),
                           alpha=0.5 if series == "floor" else 0.9)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([f"{r['model']}\n{r['form'].upper()}" for r in rows], fontsize=7)
            ax.set_title(f"ImageNet nets, batch {key}, {rows[0]['image_size']} px", fontsize=9)
        else:
            x_key = "batch" if kind == "batch" else "image_size"
            xs = [r[x_key] for r in rows]
            for series, colour, style in SCALING_SERIES:
                points = [(r[x_key], r.get(f"{series}_vs_compact")) for r in rows]
                points = [(x, y) for x, y in points if y]
                if points:
                    ax.plot(*zip(*points), color=colour, label=SCALING_LABELS.get(series, series), **style)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel("batch (32 px)" if kind == "batch" else "image size, px (batch 32)")
            ax.set_title(f"{rows[0]['model']} {key.upper()} r={rows[0]['rate']:g}: vs "
                         + ("batch" if kind == "batch" else "image size"), fontsize=9)
        ax.axhline(1.0, color="black", linewidth=0.8)
        _log_y(ax)
        ax.set_ylabel("training step time / compact")
        ax.legend(fontsize=7)
    return _save(plt, fig, path, title)
