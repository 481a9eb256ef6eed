"""The one output format of every benchmark, and the smoke run that checks a benchmark keeps to it.

`python -m devstack.bench benchmarks/NAME.py ...` runs each script in quick mode (BENCH_QUICK=1)
and fails unless it exits 0 and prints at least one line, every line a figure: what `make test`
runs so that a benchmark cannot rot unseen. It asserts no timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Literal

KEYS = ("bench", "value", "unit", "goal", "better")


def emit(bench: str, value: float, unit: str, goal: float, better: Literal["lower", "higher"]) -> None:
    """`{"bench", "value", "unit", "goal", "better"}`; everything else a benchmark says goes to stderr.

    Written to the process' real stdout: benchmarks redirect `sys.stdout` to stderr while the stack
    runs (MLflow prints run links), and a figure must not go with them.
    """
    stdout = sys.__stdout__ or sys.stdout
    print(json.dumps({"bench": bench, "value": round(value, 4), "unit": unit, "goal": round(goal, 4),
                      "better": better}), file=stdout, flush=True)


def figure_problems(stdout: str) -> list[str]:
    """What is wrong with a benchmark's stdout: no figure, or a line that is not one."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    problems = [] if lines else ["no figure printed"]
    for line in lines:
        try:
            figure = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"not a JSON line: {line[:200]!r}")
            continue
        if not isinstance(figure, dict) or sorted(figure) != sorted(KEYS):
            problems.append(f"keys are not {', '.join(KEYS)}: {line[:200]!r}")
        elif figure["better"] not in ("lower", "higher") or not isinstance(figure["value"], int | float):
            problems.append(f"bad value or direction: {line[:200]!r}")
    return problems


def smoke(script: str) -> bool:
    """Run one benchmark in quick mode; its stderr passes through, its stdout is checked."""
    started = time.monotonic()
    print(f">> {script} (BENCH_QUICK=1)", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, script], env={**os.environ, "BENCH_QUICK": "1"}, stdout=subprocess.PIPE,
                            text=True, check=False)
    problems = ([f"exit code {result.returncode}"] if result.returncode else []) + figure_problems(result.stdout)
    sys.stdout.write(result.stdout)
    verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
    print(f">> {script}: {verdict} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return not problems


def main(scripts: list[str]) -> int:
    failed = [script for script in scripts if not smoke(script)]
    if failed:
        print(f"benchmarks that crashed or printed no figures: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or not scripts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
