"""The request annotation the plugin writes, the admission policy splits and the operator parses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, format_request, parse_request, parse_requests
from modelrollout.observation import Request

AT = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
text = st.text(st.characters(blacklist_characters=";\n\r", blacklist_categories=("Cs",)), max_size=40)
name = st.text(st.characters(blacklist_characters=";,\n\r", blacklist_categories=("Cs",)), min_size=1, max_size=30)


def test_the_value_reads_as_flat_fields_a_cel_split_can_check() -> None:
    request = Request(kind="promote", id="3f2a9c1b4d5e", by="alice@cvntrade.io", at=AT, groups=("trading-oncall",),
                      ticket="CHG-1234", stage="full", revision="ab12cd34ef56")
    value = format_request(request)
    assert value == ("id=3f2a9c1b4d5e; by=alice@cvntrade.io; groups=trading-oncall; at=2026-12-01T21:00:00+00:00; "
                     "stage=full; revision=ab12cd34ef56; ticket=CHG-1234")
    assert parse_request("promote", value) == request


@given(id=name, by=name, groups=st.lists(name, max_size=3).map(tuple), ticket=text, stage=text, revision=text,
       kind=st.sampled_from(["promote", "abort", "retry"]))
def test_what_is_formatted_parses_back(id: str, by: str, groups: tuple[str, ...], ticket: str, stage: str,
                                       revision: str, kind: str) -> None:
    request = Request(kind=kind, id=id, by=by, at=AT, groups=groups, ticket=ticket, stage=stage,  # type: ignore[arg-type]
                      revision=revision)
    assert parse_request(kind, format_request(request)) == request


@pytest.mark.parametrize("field", ["by", "ticket", "stage"])
def test_a_separator_inside_a_field_is_refused_before_anything_is_written(field: str) -> None:
    values = {"by": "alice", "ticket": "", "stage": ""} | {field: "x; by=bob"}
    with pytest.raises(ValueError, match="cannot carry ';'"):
        format_request(Request(kind="promote", id="1", at=AT, **values))


def test_a_group_with_a_comma_is_refused() -> None:
    with pytest.raises(ValueError, match="group 'a,b'"):
        format_request(Request(kind="abort", id="1", by="alice", at=AT, groups=("a,b",)))


@pytest.mark.parametrize("value", [
    '{"id": "1", "by": "alice", "at": "2026-12-01T21:00:00+00:00"}',  # the old JSON form
    "id=1; at=2026-12-01T21:00:00+00:00",  # no requester
    "id=1; by=; at=2026-12-01T21:00:00+00:00",  # an empty requester
    "id=1; by=alice; by=bob; at=2026-12-01T21:00:00+00:00",  # two requesters
    "id=1; by=alice; at=yesterday",
    "id=1; by=alice; at=2026-12-01T21:00:00+00:00; note=hi",  # a field the policy does not know
    "by=alice; at=2026-12-01T21:00:00+00:00",  # no id
])
def test_a_value_the_policy_would_refuse_is_not_a_request(value: str) -> None:
    assert parse_request("promote", value) is None


def test_only_the_three_kinds_are_requests() -> None:
    value = format_request(Request(kind="promote", id="1", by="alice", at=AT))
    annotations = {f"{REQUEST_ANNOTATION_PREFIX}{kind}": value for kind in ("promote", "abort", "retry", "approve")}
    assert sorted(r.kind for r in parse_requests(annotations | {"other/request-promote": value})) == [
        "abort", "promote", "retry"]
