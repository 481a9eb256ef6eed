"""The operator's shared instant queries: which questions are the same, and how long an answer serves."""

from __future__ import annotations

import threading

import pytest

from modelrollout.observation import QueryResult
from modelrollout.prometheus_provider import SHARED_FOR_S, SharedQueries, query_key, still_fresh


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answered(value: float) -> QueryResult:
    return QueryResult(query="q", values={"*": value})


def test_the_key_is_server_credentials_and_text_and_holds_no_secret() -> None:
    key = query_key("http://prom:9090/", "s3cret", "up")
    assert key == query_key("http://prom:9090", "s3cret", "up")  # a trailing slash is the same server
    assert "s3cret" not in "".join(key)
    assert key != query_key("http://prom:9090", "other", "up")
    assert key != query_key("http://prom:9090", None, "up")
    assert key != query_key("http://prom:9091", "s3cret", "up")
    assert key != query_key("http://prom:9090", "s3cret", "up ")  # the text as sent, not a normal form
    assert query_key("http://prom:9090", None, "up") == query_key("http://prom:9090", "", "up")


@pytest.mark.parametrize(("age", "fresh"), [(0.0, True), (0.999, True), (1.0, False), (5.0, False), (-0.1, False)])
def test_an_answer_is_fresh_for_less_than_the_bucket_after_it_was_sent(age: float, fresh: bool) -> None:
    assert SHARED_FOR_S == 1.0
    assert still_fresh(10.0, 10.0 + age) is fresh  # a clock that went back shares nothing


def test_the_same_question_within_the_bucket_is_sent_once_and_after_it_again() -> None:
    clock, sent, counted = Clock(), [], []
    shared = SharedQueries(clock=clock, counted=counted.append)
    key = query_key("http://prom", None, "up")

    def send(value: float) -> QueryResult:
        sent.append(value)
        return answered(value)

    assert shared.answer(key, lambda: send(1.0)).values == {"*": 1.0}
    clock.now += 0.9
    assert shared.answer(key, lambda: send(2.0)).values == {"*": 1.0}
    assert shared.answer(query_key("http://prom", "token", "up"), lambda: send(3.0)).values == {"*": 3.0}
    clock.now += 0.1  # 1 s after the first was sent: stale, asked anew
    assert shared.answer(key, lambda: send(4.0)).values == {"*": 4.0}
    assert sent == [1.0, 3.0, 4.0]
    assert counted == [False, True, False, False]


def test_an_arrived_answer_is_taken_without_waiting_or_sending_while_fresh() -> None:
    clock, counted, release = Clock(), [], threading.Event()
    shared = SharedQueries(clock=clock, counted=counted.append)
    key = query_key("http://prom", None, "up")
    assert shared.arrived(key) is None  # never asked

    def slow() -> QueryResult:
        release.wait(5)
        return answered(1.0)

    sender = threading.Thread(target=lambda: shared.answer(key, slow))
    sender.start()
    while not len(shared):
        pass
    assert shared.arrived(key) is None  # in flight: the caller asks (and waits) the usual way
    release.set()
    sender.join(5)
    clock.now += 0.9
    arrived = shared.arrived(key)
    assert arrived is not None and arrived.values == {"*": 1.0}
    clock.now += 0.1
    assert shared.arrived(key) is None  # stale
    assert counted == [False, True]  # sent once, shared once


def test_it_holds_at_most_max_entries_and_drops_expired_answers() -> None:
    clock = Clock()
    shared = SharedQueries(max_entries=3, clock=clock)
    for i in range(5):
        shared.answer(query_key("http://prom", None, f"q{i}"), lambda: answered(0.0))
    assert len(shared) == 3
    clock.now += SHARED_FOR_S
    shared.answer(query_key("http://prom", None, "new"), lambda: answered(0.0))
    assert len(shared) == 1


def test_a_question_asked_while_its_answer_is_in_flight_waits_for_that_answer() -> None:
    shared, release, sent = SharedQueries(), threading.Event(), []
    key = query_key("http://prom", None, "slow")

    def slow() -> QueryResult:
        sent.append(1)
        release.wait(5)
        return answered(7.0)

    results: list[QueryResult] = []
    first = threading.Thread(target=lambda: results.append(shared.answer(key, slow)))
    first.start()
    while not sent:
        pass
    second = threading.Thread(target=lambda: results.append(shared.answer(key, slow)))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting, not sending
    release.set()
    first.join(5)
    second.join(5)
    assert sent == [1] and [r.values for r in results] == [{"*": 7.0}, {"*": 7.0}]


def test_a_sender_that_raises_still_answers_its_waiters() -> None:
    shared = SharedQueries()
    key = query_key("http://prom", None, "boom")

    def boom() -> QueryResult:
        raise RuntimeError("adapter bug")

    with pytest.raises(RuntimeError):
        shared.answer(key, boom)
    assert shared.answer(key, boom).error == "RuntimeError: adapter bug"
