"""The Prometheus adapter: one instant query in, one `QueryResult` (values by symbol) out.

It never raises: an outage, a timeout or bad PromQL becomes `QueryResult.error`, which
the gates turn into an Error verdict (the rollout holds, never promotes). Retries are off
so an unreachable Prometheus answers within about `timeout_s`, not after a backoff series:
the next analysis cycle is the retry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from modelrollout.gates import ALL_SYMBOLS
from modelrollout.observation import QueryResult, RangeResult

_MAX_ERROR_CHARS = 500  # errors land in `.status`; keep them readable and small


class PrometheusProvider:
    def __init__(self, url: str, timeout_s: float, bearer_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        self._client = PrometheusConnect(url=self.url, headers=headers, retry=Retry(total=0),
                                         timeout=timeout_s)

    def query(self, promql: str) -> QueryResult:
        """Instant query at Prometheus' now; the result must be a vector, one series per symbol."""
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

