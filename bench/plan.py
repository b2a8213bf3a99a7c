"""What a benchmark run will time, counted before it runs (``--plan``): the comparisons, the timed
variants, and an estimate of the seconds it takes on a GPU, so that a lent GPU's minutes are
planned on a machine without one (scripts/gpu_session.sh --dry-run).

The estimate is a model, not a measurement: every timed variant costs its ``min_run_time`` plus
a fixed overhead per sample (``do_bench``'s warm-up and L2 flush), every comparison a setup (the
modules, the first calls, the memory measurement), every ``torch.compile`` peer a compilation,
every layer shape a first launch of each Triton backend (its JIT compilations), and every layer
shape that ``backend="auto"`` meets its measurement of the candidates. The constants are
guesses to be replaced by the first GPU run's wall times."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

SAMPLE_OVERHEAD_S = 0.03
COMPARISON_SETUP_S = 1.0
COMPILE_PEER_S = 45.0
TRITON_FIRST_LAUNCH_S = 2.0
AUTO_CHOICE_S = 3.0  # ~11 candidate pairs and chains, 5 rounds of 0.1 s in all each (autotune.measure)
ROOFLINE_RATES_S = 5.0  # the scaling section's GEMM-rate and copy-bandwidth measurement (bench/roofline.py)


@dataclass
class Section:
    name: str
    comparisons: int = 0
    variants: int = 0
    samples: int = 0
    timed_s: float = 0.0
    compiles: int = 0
    triton_shapes: int = 0
    auto_choices: int = 0
    fixed_s: float = 0.0  # once per section (e.g. the scaling section's roofline rates)

    def add(self, variants: int, min_run_time: float, rounds: int, compiles: int = 0, triton_shapes: int = 0,
            auto_choices: int = 0):
        """One comparison of ``variants`` callables, timed round-robin for ``rounds`` rounds."""
        self.comparisons += 1
        self.variants += variants
        self.samples += variants * rounds
        self.timed_s += variants * min_run_time
        self.compiles += compiles
        self.triton_shapes += triton_shapes
        self.auto_choices += auto_choices

    @property
    def seconds(self) -> float:
        return (self.timed_s + self.samples * SAMPLE_OVERHEAD_S + self.comparisons * COMPARISON_SETUP_S
                + self.compiles * COMPILE_PEER_S + self.triton_shapes * TRITON_FIRST_LAUNCH_S
                + self.auto_choices * AUTO_CHOICE_S + self.fixed_s)


@dataclass
class Plan:
    title: str
    sections: List[Section] = field(default_factory=list)

    def section(self, name: str) -> Section:
        self.sections.append(Section(name))
        return self.sections[-1]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sections)

    @property
    def variants(self) -> int:
        return sum(s.variants for s in self.sections)

    def __str__(self) -> str:
        lines = [f"plan: {self.title}"]
        for s in self.sections:
            lines.append(f"  {s.name:<10} {s.comparisons:4d} comparisons {s.variants:5d} timed variants "
                         f"{s.compiles:3d} compiles {s.triton_shapes:4d} Triton first launches "
                         f"{s.auto_choices:4d} auto choices  ~{s.seconds:6.0f} s")
        lines.append(f"  total      {self.variants} timed variants, ~{self.seconds:.0f} s on a GPU "
                     f"(estimate: bench/plan.py's cost model)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"title": self.title, "seconds": round(self.seconds, 1), "variants": self.variants,
                "sections": [{"name": s.name, "comparisons": s.comparisons, "variants": s.variants,
                              "seconds": round(s.seconds, 1)} for s in self.sections]}
