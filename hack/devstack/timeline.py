"""What `make demo` saw, over time: the recorder the monitor loop feeds, and the PNG drawn from it.

The operator's status holds only the latest verdicts, so the demo records every change of
stage, phase and gate verdict as it polls; the expectancy series come back from Prometheus
afterwards with a range query, exactly as a dashboard would read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

VERDICT_RANK = {"Pass": 0, "Inconclusive": 1, "Error": 2, "Fail": 3}
VERDICT_STYLE = {"Pass": ("#2e7d32", "o"), "Inconclusive": ("#f9a825", "s"), "Error": ("#6a1b9a", "D"),
                 "Fail": ("#c62828", "X")}
PHASE_COLOR = {"Pending": "#eeeeee", "Progressing": "#bbdefb", "Paused": "#fff9c4", "Degraded": "#ffe0b2",
               "AwaitingApproval": "#ffe082", "RollingBack": "#ef9a9a", "RolledBack": "#e57373",
               "NotPromoted": "#bdbdbd", "Watching": "#c8e6c9", "Completed": "#81c784", "Invalid": "#9e9e9e"}


def worst(verdicts: Sequence[str]) -> str:
    """A gate's verdict over its symbols: its worst one."""
    return max(verdicts, key=lambda v: VERDICT_RANK.get(v, 0))


def verdicts_by_name(measurements: Sequence[Mapping[str, object]]) -> dict[str, str]:
    names: dict[str, list[str]] = {}
    for m in measurements:
        names.setdefault(str(m["name"]), []).append(str(m["verdict"]))
    return {name: worst(v) for name, v in names.items()}


@dataclass
class RolloutRecord:
    """Every change the demo saw in one rollout's status, with wall-clock times."""

    name: str
    namespace: str
    started: datetime
    phases: list[tuple[datetime, str, str]] = field(default_factory=list)  # (at, stage, phase)
    verdicts: list[tuple[datetime, str, str, str]] = field(default_factory=list)  # (at, stage, gate, verdict)
    marks: list[tuple[datetime, str]] = field(default_factory=list)  # human or simulator interventions
    _last: dict[str, str] = field(default_factory=dict)

    def observe(self, at: datetime, status: Mapping[str, object]) -> bool:
        """Record what changed; True when stage or phase changed."""
        stage, phase = str(status.get("stage") or "-"), str(status.get("phase") or "Pending")
        changed = not self.phases or self.phases[-1][1:] != (stage, phase)
        if changed:
            self.phases.append((at, stage, phase))
        gates = verdicts_by_name([*status.get("gates", []), *status.get("triggers", [])])  # type: ignore[misc]
        evaluated = str(status.get("lastEvaluatedAt") or "")
        for gate, verdict in gates.items():
            key = f"{stage}/{gate}"
            if self._last.get(key) != f"{verdict}@{evaluated}":
                self._last[key] = f"{verdict}@{evaluated}"
                self.verdicts.append((at, stage, gate, verdict))
        return changed

    def mark(self, at: datetime, label: str) -> None:
        self.marks.append((at, label))


Series = Mapping[str, Sequence[tuple[datetime, float]]]  # label -> samples


def draw(path: Path, records: Sequence[RolloutRecord], expectancy: Sequence[Series], ended: datetime) -> Path:
    """One panel pair per rollout: phase bands with gate verdict markers above, expectancy below."""
    fig, axes = plt.subplots(2 * len(records), 1, figsize=(13, 4.2 * len(records)), sharex=True,
                             gridspec_kw={"height_ratios": [1.1, 1.0] * len(records)})
    for i, (record, series) in enumerate(zip(records, expectancy, strict=True)):
        gates_ax, money_ax = axes[2 * i], axes[2 * i + 1]
        _phase_bands(gates_ax, record, ended)
        _phase_bands(money_ax, record, ended, labels=False)
        _verdicts(gates_ax, record)
        gates_ax.set_title(f"{record.namespace}/{record.name}", loc="left", fontsize=11, fontweight="bold")
        for label, samples in series.items():
            if samples:
                xs, ys = zip(*samples, strict=True)
                candidate = "candidate" in label
                money_ax.plot(xs, ys, label=label, color="#1565c0" if candidate else "#616161",
                              linewidth=2.0 if "BTCUSDC" in label else 0.8,
                              linestyle="-" if candidate else "--", alpha=1.0 if "BTCUSDC" in label else 0.6)
        money_ax.axhline(0, color="black", linewidth=0.6)
        money_ax.set_ylabel("expectancy_net_realized\n(USDC per trade)", fontsize=8)
        money_ax.legend(loc="upper left", fontsize=7, ncol=3)
        for ax in (gates_ax, money_ax):
            for at, _label in record.marks:
                ax.axvline(at, color="black", linestyle=":", linewidth=1.2)
            ax.grid(axis="x", alpha=0.3)
        for at, label in record.marks:
            money_ax.annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                              textcoords="offset points", fontsize=8, fontweight="bold")
    handles = [Patch(color=c, label=p) for p, c in PHASE_COLOR.items()
               if any(p == phase for r in records for _, _, phase in r.phases)]
    handles += [plt.Line2D([], [], color=c, marker=m, linestyle="", label=v) for v, (c, m) in VERDICT_STYLE.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    axes[-1].set_xlabel("wall clock (UTC)")
    fig.suptitle("make demo: focal-loss rollouts (stage/phase bands, gate verdicts, live expectancy from Prometheus)",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _phase_bands(ax: plt.Axes, record: RolloutRecord, ended: datetime, labels: bool = True) -> None:
    bounds = [*record.phases[1:], (ended, "", "")]
    for (start, stage, phase), (end, _, _) in zip(record.phases, bounds, strict=True):
        ax.axvspan(start, end, color=PHASE_COLOR.get(phase, "#ffffff"), alpha=0.8, linewidth=0)
        if labels and (end - start).total_seconds() > 0:
            ax.text(start, 1.02, f"{stage}\n{phase}", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")


def _verdicts(ax: plt.Axes, record: RolloutRecord) -> None:
    gates = sorted({gate for _, _, gate, _ in record.verdicts})
    rows = {gate: i for i, gate in enumerate(gates)}
    for at, _, gate, verdict in record.verdicts:
        color, marker = VERDICT_STYLE.get(verdict, ("black", "."))
        ax.scatter(at, rows[gate], color=color, marker=marker, s=22, zorder=3)
    ax.set_yticks(range(len(gates)), gates, fontsize=8)
    ax.set_ylim(-0.7, max(len(gates), 1) - 0.3)
