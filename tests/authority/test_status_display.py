"""`kubectl modelrollout status` shows who approved, as what, with which ticket, and every decision."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelrollout.cli import render

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "focal-loss-rollout-fast.yaml"


def decision(at: str, request: str, by: str, outcome: str, message: str, **extra: object) -> dict[str, object]:
    return {"at": at, "stage": "full", "phase": "AwaitingApproval", "message": message,
            "decision": {"request": request, "by": by, "outcome": outcome, **extra}}


def test_status_shows_the_approver_and_the_decisions() -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["namespace"] = "trading"
    manifest["status"] = {
        "phase": "Watching", "stage": "full", "stageIndex": 2, "revision": "ab12",
        "approval": {"stage": "full", "revision": "ab12", "by": "alice@cvntrade.io", "at": "2026-12-01T21:00:05Z",
                     "ticket": "CHG-1", "request": "promote/1a"},
        "history": [
            decision("2026-12-01T20:59:00Z", "promote/0f", "carol@cvntrade.io", "Refused",
                     "promote by carol@cvntrade.io: refused: not named in spec.accountability.mayApprove (users [])"),
            decision("2026-12-01T21:00:05Z", "promote/1a", "alice@cvntrade.io", "Accepted",
                     "approved by alice@cvntrade.io (CHG-1); stage full started", ticket="CHG-1"),
            decision("2026-12-01T21:01:00Z", "abort/2b", "dave@cvntrade.io", "Accepted", "rolling back",
                     groups=["trading-oncall"], ticket="INC-1"),
        ]}
    text = render(manifest)
    assert "Approved:  full by alice@cvntrade.io at 2026-12-01 21:00:05 (CHG-1)    verified by the apiserver" in text
    rows = text.split("Decisions:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert rows[0].split() == ["TIME", "REQUEST", "BY", "TICKET", "OUTCOME"]
    assert rows[1].split()[:4] == ["20:59:00", "promote/0f", "carol@cvntrade.io", "Refused"]
    assert "refused: not named in spec.accountability.mayApprove" in rows[1]
    assert rows[2].split() == ["21:00:05", "promote/1a", "alice@cvntrade.io", "CHG-1", "Accepted"]
    assert rows[3].split()[:6] == ["21:01:00", "abort/2b", "dave@cvntrade.io", "as", "trading-oncall", "INC-1"]
