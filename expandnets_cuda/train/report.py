"""What a run leaves behind and shows: per-epoch metrics (CSV), training curves (PNG), progress bars.

tqdm and matplotlib are imported when first used, so the rest of the package works without them.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from typing import Iterable, List, Optional, Sequence


@dataclass(frozen=True)
class EpochMetrics:
    """One row of ``metrics.csv``. ``train_loss`` is the training objective (the distillation loss
    when distilling), averaged over the epoch's batches; ``test_loss`` is always cross-entropy."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    time_s: float

    def line(self, epochs: int) -> str:
        return (f"epoch {self.epoch:>3}/{epochs}  lr {self.lr:.4g}  train loss {self.train_loss:.4f} "
                f"acc {100 * self.train_acc:6.2f}%  test loss {self.test_loss:.4f} acc {100 * self.test_acc:6.2f}%  "
                f"({self.time_s:.1f} s)")


CSV_COLUMNS = [f.name for f in fields(EpochMetrics)]


def write_csv(path: str, history: Sequence[EpochMetrics]) -> None:
    """The whole history, rewritten each epoch (a resumed run continues the same file)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(row) for row in history)


def plot_curves(path: str, history: Sequence[EpochMetrics], title: str) -> None:
    """Loss and accuracy per epoch, training and test, side by side."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed or wanted
    import matplotlib.pyplot as plt

    epochs = [row.epoch for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r.train_loss for r in history], label="train")
    ax_loss.plot(epochs, [r.test_loss for r in history], label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * r.train_acc for r in history], label="train")
    ax_acc.plot(epochs, [100 * r.test_acc for r in history], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Progress:
    """An epoch bar and a per-epoch step bar. ``enabled=None`` shows them only on a terminal;
    ``verbose`` prints one line per epoch (through tqdm, so lines and bars do not collide)."""

    def __init__(self, enabled: Optional[bool], verbose: bool):
        self._enabled, self._verbose = enabled, verbose

    def epochs(self, first: int, last: int, desc: str) -> Iterable[int]:
        from tqdm import tqdm
        return tqdm(range(first, last + 1), initial=first - 1, total=last, desc=desc, unit="epoch",
                    disable=None if self._enabled is None else not self._enabled, dynamic_ncols=True)

    def steps(self, total: int, epoch: int):
        from tqdm import tqdm
        return tqdm(total=total, desc=f"epoch {epoch}", unit="step", leave=False,
                    disable=None if self._enabled is None else not self._enabled, dynamic_ncols=True)

    def print(self, message: str) -> None:
        if self._verbose:
            from tqdm import tqdm
            tqdm.write(message)


def history_from_rows(rows: List[dict]) -> List[EpochMetrics]:
    """Metrics as stored in a checkpoint (plain dicts) back to ``EpochMetrics``."""
    return [EpochMetrics(**row) for row in rows]
