"""The Prometheus adapter: one instant query in, one `QueryResult` (values by symbol) out.

It never raises: an outage, a timeout or bad PromQL becomes `QueryResult.error`, which
the gates turn into an Error verdict (the rollout holds, never promotes). Retries are off
so an unreachable Prometheus answers within about `timeout_s`, not after a backoff series:
the next analysis cycle is the retry.

Rollouts of one operator often ask the same Prometheus the same question at about the same
moment (one template, many rollouts). `SharedQueries` answers them with one HTTP query: an
answer is shared only while it is younger than `SHARED_FOR_S`, counted from the moment its
query was sent, and only with callers that would have sent the very same query with the
same credentials.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from modelrollout.gates import ALL_SYMBOLS
from modelrollout.observation import QueryResult, RangeResult

_MAX_ERROR_CHARS = 500  # errors land in `.status`; keep them readable and small
SHARED_FOR_S = 1.0  # Prometheus' own scrape and rule intervals are >= 1 s: a younger answer is as good as new
SHARED_MAX_ENTRIES = 4096

QueryKey = tuple[str, str, str]  # (url, token identity, PromQL)


def query_key(url: str, bearer_token: str | None, promql: str) -> QueryKey:
    """What makes two instant queries the same question: the server, the credentials, the text.

    The token enters as a digest, so the cache holds no secret and two tokens never share.
    """
    token = hashlib.sha256(bearer_token.encode()).hexdigest() if bearer_token else ""
    return url.rstrip("/"), token, promql


def still_fresh(sent_at: float, now: float, shared_for_s: float = SHARED_FOR_S) -> bool:
    """An answer may be reused while its query was sent less than `shared_for_s` ago (monotonic s).

    Prometheus evaluates the query after it was sent, so a reused answer is never older than that.
    """
    return 0.0 <= now - sent_at < shared_for_s


class _Answer:
    """One query's answer, awaited by every caller that asked the same while it was in flight."""

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self._done = threading.Event()
        self._result: QueryResult | None = None

    def set(self, result: QueryResult) -> None:
        self._result = result
        self._done.set()

    def wait(self) -> QueryResult:
        self._done.wait()
        assert self._result is not None
        return self._result

    def arrived(self) -> QueryResult | None:
        return self._result if self._done.is_set() else None


class SharedQueries:
    """Instant-query answers shared across the rollouts of one process, for `shared_for_s` each.

    Thread-safe; a query asked again while its first asking is in flight waits for that answer
    instead of sending a second request. Errors are shared like values (an outage then costs one
    timeout per question, not one per rollout). Holds at most `max_entries` answers: expired ones
    are dropped on every insert, then the oldest.
    """

    def __init__(self, shared_for_s: float = SHARED_FOR_S, max_entries: int = SHARED_MAX_ENTRIES, *,
                 clock: Callable[[], float] = time.monotonic,
                 counted: Callable[[bool], None] = lambda shared: None) -> None:
        self.shared_for_s = shared_for_s
        self.max_entries = max_entries
        self._clock = clock
        self._counted = counted  # called with shared=False for each query sent, True for each answer reused
        self._lock = threading.Lock()
        self._answers: OrderedDict[QueryKey, _Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def answer(self, key: QueryKey, send: Callable[[], QueryResult]) -> QueryResult:
        """The fresh answer to `key`, sending the query (`send`, which must not raise) only if there is none."""
        with self._lock:
            now = self._clock()
            known = self._answers.get(key)
            if known is not None and still_fresh(known.sent_at, now, self.shared_for_s):
                mine = None
            else:
                mine = known = self._answers[key] = _Answer(now)
                self._answers.move_to_end(key)
                self._drop_old(now)
        self._counted(mine is None)
        if mine is None:
            return known.wait()
        try:
            result = send()
        except BaseException as error:  # the adapter does not raise; if it ever does, nobody waits forever
            mine.set(QueryResult(query=key[2], error=f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]))
            raise
        mine.set(result)
        return result

    def arrived(self, key: QueryKey) -> QueryResult | None:
        """The fresh answer to `key` if it has arrived, else None; never waits, never sends.

        Lets a caller that asks many queries at once take what is already known on its own thread,
        and start threads only for the rest: most cycles of many rollouts find every answer here.
        """
        with self._lock:
            known = self._answers.get(key)
            if known is None or not still_fresh(known.sent_at, self._clock(), self.shared_for_s):
                return None
            result = known.arrived()
        if result is not None:
            self._counted(True)
        return result

    def _drop_old(self, now: float) -> None:
        # Insertion order is sending order, so the expired answers are at the front.
        while self._answers:
            key, oldest = next(iter(self._answers.items()))
            if still_fresh(oldest.sent_at, now, self.shared_for_s) and len(self._answers) <= self.max_entries:
                return
            del self._answers[key]


class PrometheusProvider:
    def __init__(self, url: str, timeout_s: float, bearer_token: str | None = None, *,
                 shared: SharedQueries | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = bearer_token
        self._shared = shared
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        self._client = PrometheusConnect(url=self.url, headers=headers, retry=Retry(total=0),
                                         timeout=timeout_s)

    def query(self, promql: str) -> QueryResult:
        """Instant query at Prometheus' now; the result must be a vector, one series per symbol.

        With `shared`, an answer to the same query sent less than `shared.shared_for_s` ago serves.
        """
        if self._shared is None:
            return self._query(promql)
        return self._shared.answer(query_key(self.url, self._token, promql), lambda: self._query(promql))

    def arrived(self, promql: str) -> QueryResult | None:
        """A shared answer to `promql` that is fresh and has arrived (`SharedQueries.arrived`), else None."""
        if self._shared is None:
            return None
        return self._shared.arrived(query_key(self.url, self._token, promql))

    def _query(self, promql: str) -> QueryResult:
        try:
            # Prometheus' own `timeout` stops a slow evaluation server-side as well.
            series = self._client.custom_query(promql, params={"timeout": f"{self.timeout_s:g}s"})
            return QueryResult(query=promql, values=_values_by_symbol(series))
        except Exception as error:  # noqa: BLE001 - an adapter answers, it never raises
            cause = f"{type(error).__name__}: {error}"
            return QueryResult(query=promql, error=f"Prometheus at {self.url}: {cause}"[:_MAX_ERROR_CHARS])


    def query_range(self, promql: str, start: datetime, end: datetime, step_s: float) -> RangeResult:
        """Range query (history, for `kubectl modelrollout replay`): per symbol, (unix time, value) samples."""
        try:
            series = self._client.custom_query_range(promql, start_time=start, end_time=end, step=f"{step_s:g}s",
                                                     params={"timeout": f"{self.timeout_s:g}s"})
            by_symbol: dict[str, list[tuple[float, float]]] = {}
            for item in series:
                symbol = item["metric"].get("symbol", ALL_SYMBOLS)
                if symbol in by_symbol:
                    raise ValueError(f"two series for symbol {symbol!r}: query must aggregate by (symbol)")
                by_symbol[symbol] = [(float(t), float(v)) for t, v in item["values"]]
            return RangeResult(query=promql, values=by_symbol)
        except Exception as error:  # noqa: BLE001 - an adapter answers, it never raises
            return RangeResult(query=promql, error=f"Prometheus at {self.url}: {type(error).__name__}: "
                                                   f"{error}"[:_MAX_ERROR_CHARS])


def _values_by_symbol(series: Any) -> dict[str, float]:
    if not isinstance(series, list) or not all(isinstance(s, dict) and "value" in s for s in series):
        raise ValueError(f"query must return an instant vector, got {str(series)[:100]}")
    values: dict[str, float] = {}
    for item in series:
        symbol = item["metric"].get("symbol", ALL_SYMBOLS)
        if symbol in values:
            raise ValueError(f"two series for symbol {symbol!r}: query must aggregate by (symbol)")
        values[symbol] = float(item["value"][1])  # "NaN" stays NaN: the gates call it no data
    return values

