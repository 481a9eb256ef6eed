"""The engine counts a human request only from someone the spec names, and only while the apiserver
vouches for requesters; every request it handles, accepted or refused, is in the history with who asked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine_driver import Driver

from modelrollout.status import ModelRolloutStatus

UNVERIFIED = "the apiserver accepted a request in someone else's name"


def decisions(status: ModelRolloutStatus) -> list[tuple[str, str, str]]:
    return [(h.decision.request.split("/")[0], h.decision.by, h.decision.outcome)
            for h in status.history if h.decision is not None]


def test_a_named_approver_promotes_and_the_history_says_who_with_the_ticket() -> None:
    driver = Driver()
    driver.to_awaiting()
    request = driver.promote(ticket="CHG-7")
    decision = driver.step(requests=[request])
    status = decision.status
    assert status.phase == "Watching"
    assert status.approval is not None and (status.approval.by, status.approval.request) == (
        "alice@cvntrade.io", request.key)
    assert status.approval.at == driver.cycles[-1].now and status.approval.requested_at == request.at
    entry = status.history[-1]
    assert entry.phase == "Watching" and entry.decision is not None
    assert (entry.decision.by, entry.decision.ticket, entry.decision.outcome) == ("alice@cvntrade.io", "CHG-7",
                                                                                 "Accepted")
    assert any("approved by alice@cvntrade.io (CHG-7)" in e.message for e in decision.events)


def test_someone_the_spec_does_not_name_is_refused_and_recorded() -> None:
    driver = Driver()
    driver.to_awaiting()
    request = driver.promote(by="carol@cvntrade.io", ticket="CHG-8")
    decision = driver.step(requests=[request])
    assert decision.status.phase == "AwaitingApproval" and decision.status.approval is None
    assert request.key in decision.status.handled_requests  # refused once, not retried every cycle
    (event,) = decision.events
    assert (event.type, event.reason) == ("Warning", "RequestRefused")
    assert event.message == ("promote by carol@cvntrade.io (CHG-8): refused: not named in "
                             "spec.accountability.mayApprove (users [alice@cvntrade.io, bob@cvntrade.io], groups [])")
    assert decisions(decision.status)[-1] == ("promote", "carol@cvntrade.io", "Refused")
    assert decision.status.history[-1].message == event.message


def test_a_group_named_in_may_roll_back_aborts_but_cannot_promote() -> None:
    driver = Driver()
    driver.to_awaiting()
    promote = driver.promote(by="dave@cvntrade.io", groups=("trading-oncall",))
    assert driver.step(requests=[promote]).status.approval is None  # oncall may roll back, not approve
    abort = driver.abort(by="dave@cvntrade.io", groups=("trading-oncall",), ticket="INC-1")
    decision = driver.step(requests=[abort])
    assert decision.status.phase in ("RollingBack", "RolledBack")
    assert decision.status.rollback is not None
    assert decision.status.rollback.reason == "aborted by dave@cvntrade.io as trading-oncall (INC-1)"
    assert decisions(decision.status)[-2:] == [("promote", "dave@cvntrade.io", "Refused"),
                                               ("abort", "dave@cvntrade.io", "Accepted")]


def test_retry_needs_may_approve() -> None:
    driver = Driver()
    driver.to_canary()
    driver.step(requests=[driver.abort()])
    driver.run_until(lambda s: s.phase == "RolledBack")
    oncall = driver.step(requests=[driver.retry(by="dave@cvntrade.io", groups=("trading-oncall",))])
    assert oncall.status.phase == "RolledBack" and [e.reason for e in oncall.events] == ["RequestRefused"]
    # the shell reads MLflow versions for a retry
    with_versions = replace(driver.observe("Pass", "Pass"), versions=driver.world.versions(driver.spec))
    owner = driver.step(requests=[driver.retry(by="bob@cvntrade.io")], observation=with_versions)
    assert owner.status.phase == "Progressing" and owner.status.stage == "canary"


def test_nothing_counts_while_the_apiserver_does_not_vouch_for_requesters() -> None:
    driver = Driver()
    driver.to_awaiting()
    request = driver.promote()
    unverified = replace(driver.observe("Pass", "Pass"), requests_unverified=UNVERIFIED)
    decision = driver.step(requests=[request], observation=unverified)
    assert decision.status.phase == "AwaitingApproval" and decision.status.approval is None
    (event,) = decision.events
    assert event.reason == "RequestRefused" and UNVERIFIED in event.message
    # The same request once the policy is back: already handled, it never counts.
    assert driver.step(requests=[request]).status.approval is None
    assert decisions(driver.status)[-1] == ("promote", "alice@cvntrade.io", "Refused")


def test_an_approver_removed_from_the_spec_before_the_request_is_handled_is_refused() -> None:
    driver = Driver()
    driver.to_awaiting()
    request = driver.promote()  # admitted while alice was named

    def drop_alice(spec: dict[str, Any]) -> None:
        spec["accountability"]["mayApprove"] = {"users": ["bob@cvntrade.io"]}

    driver.edit(drop_alice)
    decision = driver.step(requests=[request])
    assert decision.status.approval is None and decision.status.phase == "AwaitingApproval"
    assert [e.reason for e in decision.events] == ["RequestRefused"]


def test_a_stale_promote_is_refused_and_recorded() -> None:
    driver = Driver()
    driver.to_awaiting()
    decision = driver.step(requests=[driver.promote(revision="0ld")])
    assert [e.reason for e in decision.events] == ["ApprovalRejected"] and decision.status.approval is None
    assert decisions(decision.status)[-1] == ("promote", "alice@cvntrade.io", "Refused")


def test_an_accepted_request_without_a_phase_change_still_gets_its_entry() -> None:
    driver = Driver()
    driver.to_canary()
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    driver.step(fail=True)  # the revert before the restart is stuck
    before = len(driver.status.history)
    decision = driver.step(requests=[driver.abort()])
    assert decision.status.phase == "RollingBack" and [e.reason for e in decision.events] == ["Aborted"]
    assert len(decision.status.history) == before + 1
    assert decision.status.history[-1].message == "abort by alice@cvntrade.io (CHG-1) accepted"
    assert decisions(decision.status)[-1] == ("abort", "alice@cvntrade.io", "Accepted")
