"""The one output format of every benchmark: a JSON line per figure on stdout."""

from __future__ import annotations

import json
from typing import Literal


def emit(bench: str, value: float, unit: str, goal: float, better: Literal["lower", "higher"]) -> None:
    """`{"bench", "value", "unit", "goal", "better"}`; everything else a benchmark says goes to stderr."""
    print(json.dumps({"bench": bench, "value": round(value, 4), "unit": unit, "goal": round(goal, 4),
                      "better": better}), flush=True)
