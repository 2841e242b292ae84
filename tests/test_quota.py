"""Reading a server's quota from its rate-limit headers, in each form servers send."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from email.utils import formatdate

import pytest
from scrapy.http import Headers

from ingest.ratelimit.headers import Quota, binding, quota_of, rate_limited, standard_quotas

SERVER_NOW = 1_700_000_000
DATE = formatdate(SERVER_NOW, usegmt=True)


def read(fields: Mapping[str, str | bytes | list[str]], now: float = SERVER_NOW) -> Quota | None:
    """The binding quota, without the name of its policy (see the test of names)."""
    found = quota_of(Headers(fields), now=now)
    return None if found is None else replace(found, name="")


def test_no_rate_limit_headers_mean_no_quota() -> None:
    assert read({}) is None
    assert read({"Content-Type": "application/json", "Date": DATE, "Retry-After": "5"}) is None


@pytest.mark.parametrize("prefix", ["X-RateLimit-", "x-ratelimit-", "X-Rate-Limit-"])
def test_x_ratelimit(prefix: str) -> None:
    fields = {f"{prefix}Limit": "100", f"{prefix}Remaining": " 7 ", f"{prefix}Reset": "30"}
    assert read(fields) == Quota(remaining=7, reset=30.0, limit=100)


@pytest.mark.parametrize(
    ("reset", "date", "now", "expected"),
    [
        ("30", None, 0, 30.0),
        ("12.5", None, 0, 12.5),
        ("86400", DATE, 0, 86400.0),  # a day is still a delay, not a date in 1970
        (str(SERVER_NOW + 30), DATE, SERVER_NOW + 1000, 30.0),  # our clock 1000 s ahead
        (str(SERVER_NOW + 30), None, SERVER_NOW + 10, 20.0),  # no Date: our clock decides
        (f"{SERVER_NOW + 30}.5", DATE, 0, 30.5),
        (str((SERVER_NOW + 30) * 1000 + 250), DATE, 0, 30.25),  # milliseconds
        (str((SERVER_NOW + 30) * 1000), None, SERVER_NOW, 30.0),
        (str(SERVER_NOW - 5), DATE, SERVER_NOW - 3600, 0.0),  # already past
        (str((SERVER_NOW - 5) * 1000), None, SERVER_NOW, 0.0),
    ],
)
def test_reset_is_a_delay_or_an_epoch(
    reset: str, date: str | None, now: float, expected: float
) -> None:
    fields = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    if date is not None:
        fields["Date"] = date
    found = read(fields, now=now)
    assert found is not None
    assert found.reset == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"X-RateLimit-Remaining": "lots"}, None),
        ({"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "-5"}, None),
        ({"X-RateLimit-Remaining": "5.0", "X-RateLimit-Limit": "1e3"}, Quota(remaining=5)),
        ({"X-RateLimit-Remaining": "5.9", "X-RateLimit-Limit": "9.5"}, Quota(remaining=5)),
        ({"X-RateLimit-Remaining": b"5\xb2"}, None),  # latin-1 superscript two
        ({"X-RateLimit-Reset": "soon", "X-RateLimit-Remaining": "3"}, Quota(remaining=3)),
        ({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "?"}, Quota(limit=100)),
        ({"X-RateLimit-Reset": "1" * 16}, None),  # too long to be a number we trust
    ],
)
def test_malformed_x_ratelimit_fields_are_ignored_and_named(
    fields: dict[str, str | bytes], expected: Quota | None
) -> None:
    assert read(fields) == expected
    unreadable: list[str] = []
    standard_quotas(Headers(fields), now=SERVER_NOW, unreadable=unreadable)
    assert unreadable  # each case has a field that cannot be read


def test_ietf_quotas_are_each_read_and_named() -> None:
    fields = {
        "RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
        "RateLimit": '"burst";r=80;t=20, "daily";r=3;t=5000',
    }
    quotas = standard_quotas(Headers(fields), now=SERVER_NOW, unreadable=[])
    assert quotas == [Quota(80, 20.0, 100, 60.0, "burst"), Quota(3, 5000.0, 1000, 86400.0, "daily")]
    assert binding(quotas) == quotas[1]


def test_ietf_policy_and_state() -> None:
    fields = {"RateLimit-Policy": '"default";q=100;w=60', "RateLimit": '"default";r=50;t=30'}
    assert read(fields) == Quota(remaining=50, reset=30.0, limit=100, window=60.0)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # The closest to exhaustion binds, with its own policy's numbers.
        ('"burst";r=80;t=20, "daily";r=3;t=5000', Quota(3, 5000.0, 1000, 86400.0)),
        ('"burst";r=2;t=20, "daily";r=300;t=5000', Quota(2, 20.0, 100, 60.0)),
        # A tie goes to the one that frees up last; then to one that says when.
        ('"burst";r=0;t=20, "daily";r=0;t=5000', Quota(0, 5000.0, 1000, 86400.0)),
        ('"burst";r=0, "daily";r=0;t=5', Quota(0, 5.0, 1000, 86400.0)),
        ('"burst";r=0, "daily";r=0;t=0', Quota(0, 0.0, 1000, 86400.0)),
        # A state naming no known policy still counts; its limit is unknown.
        ('"burst";r=9;t=20, "other";r=1;t=2', Quota(1, 2.0)),
    ],
)
def test_several_ietf_policies_the_binding_one_wins(state: str, expected: Quota) -> None:
    policy = '"burst";q=100;w=60, "daily";q=1000;w=86400'
    assert read({"RateLimit-Policy": policy, "RateLimit": state}) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # 1000 a day is slower than 100 a minute, though its quota is larger.
        ('"burst";q=100;w=60, "daily";q=1000;w=86400', Quota(limit=1000, window=86400.0)),
        ('"a";q=10;w=1, "b";q=5', Quota(limit=10, window=1.0)),  # a window beats none
        ('"a";q=10, "b";q=5', Quota(limit=5)),
    ],
)
def test_ietf_policies_alone_give_the_strictest(policy: str, expected: Quota) -> None:
    assert read({"RateLimit-Policy": policy}) == expected


@pytest.mark.parametrize(
    ("policy", "state"),
    [
        ("default;q=100;w=60", "default;r=50;t=30"),  # tokens
        ('"default";q=100;w=60', "default;r=50;t=30"),  # a token names a string's policy
        ('"default"; q=100;   w=60', '  "default";r=50; t=30  '),  # spaces after ';'
        (['"x";q=1;w=1', '"default";q=100;w=60'], '"default";r=50;t=30'),  # two lines
        ('"x";q=1;w=1\t,\t"default";q=100;w=60;pk=:cGsx:', '"default";r=50;t=30;pk=:cGsx:'),
    ],
)
def test_ietf_structured_field_syntax(policy: str | list[str], state: str) -> None:
    assert read({"RateLimit-Policy": policy, "RateLimit": state}) == Quota(50, 30.0, 100, 60.0)


def test_ietf_names_are_parsed_not_split_on_commas() -> None:
    fields = {
        "RateLimit-Policy": r'"a,b \"x\"";q=100;w=60, "c";q=5000;w=60',
        "RateLimit": r'"c";r=10;t=1, "a,b \"x\"";r=4;t=9',
    }
    assert read(fields) == Quota(remaining=4, reset=9.0, limit=100, window=60.0)


def test_ietf_quota_in_other_units_is_not_a_request_quota() -> None:
    fields = {
        "RateLimit-Policy": '"bytes";q=65536;qu="content-bytes";w=1, "req";q=100;w=60',
        "RateLimit": '"bytes";r=0;t=1, "req";r=40;t=30',
    }
    assert read(fields) == Quota(remaining=40, reset=30.0, limit=100, window=60.0)


@pytest.mark.parametrize(
    "state",
    [
        '"default";r=-1',
        '"default";r=5.5;t=3',
        '"default";r;t=3',  # a parameter without a value is a boolean
        '"default";r=?1',
        '"default";r=5;t=-3',
        '"default";t=3',
        '"default";r=1234567890123456',  # more digits than a structured integer holds
        '"default";r=1;t=1.2345',
        '"default" ;r=5',
        '"default";R=5',
        '"default;r=5',
        '"default";r=5,',
        ', "default";r=5',
        '"default";r=5,,"x";r=1',
        '("default");r=5',
        "limit=100, remaining=5, reset=3",  # draft 07's dictionary
        "5;t=3",
        '"d\xe9fault";r=5'.encode("latin-1"),
    ],
)
def test_malformed_ietf_state_is_ignored(state: str | bytes) -> None:
    assert read({"RateLimit": state}) is None
    assert read({"RateLimit": state, "RateLimit-Policy": '"default";q=100;w=60'}) == Quota(
        limit=100, window=60.0
    )
    assert read({"RateLimit": state, "X-RateLimit-Remaining": "7"}) == Quota(remaining=7)


@pytest.mark.parametrize(
    "policy",
    ["q=100", '"default";q=-1;w=60', '"default";w=60', '"default";q=1.5', "default;q=100,"],
)
def test_malformed_ietf_policy_is_ignored(policy: str) -> None:
    assert read({"RateLimit-Policy": policy}) is None
    fields = {"RateLimit-Policy": policy, "RateLimit-Limit": "100", "RateLimit-Remaining": "3"}
    assert read(fields) == Quota(remaining=3, limit=100)


def test_older_ietf_draft() -> None:
    fields = {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "50",
        "RateLimit-Reset": "30",
        "RateLimit-Policy": "10;w=1, 100;w=60",
    }
    assert read(fields) == Quota(remaining=50, reset=30.0, limit=100, window=60.0)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"RateLimit-Policy": "100;w=60, 1000;w=3600"}, Quota(limit=1000, window=3600.0)),
        ({"RateLimit-Limit": "10, 10;w=1, 50;w=60"}, Quota(limit=10, window=1.0)),
        ({"RateLimit-Limit": "50;w=60", "RateLimit-Remaining": "0"}, Quota(0, None, 50, 60.0)),
        ({"RateLimit-Limit": "50", "RateLimit-Policy": "10;w=1"}, Quota(limit=50)),
        # GitLab sends an epoch here; it is read like X-RateLimit-Reset.
        ({"RateLimit-Reset": str(SERVER_NOW + 60), "Date": DATE}, Quota(reset=60.0)),
        ({"RateLimit-Remaining": "lots", "RateLimit-Reset": "5"}, Quota(reset=5.0)),
        ({"RateLimit-Remaining": "5, 6"}, None),
        ({"RateLimit-Remaining": "-5", "RateLimit-Limit": "abc"}, None),
    ],
)
def test_older_ietf_draft_variants(
    fields: dict[str, str | list[str]], expected: Quota | None
) -> None:
    assert read(fields) == expected


ALL_FORMS = {
    "RateLimit-Policy": '"default";q=100;w=60',
    "RateLimit": '"default";r=1;t=1',
    "RateLimit-Limit": "200",
    "RateLimit-Remaining": "2",
    "X-RateLimit-Limit": "300",
    "X-RateLimit-Remaining": "3",
}


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ({}, Quota(1, 1.0, 100, 60.0)),
        ({"RateLimit-Policy": "q=100", "RateLimit": "r=1"}, Quota(remaining=2, limit=200)),
        (dict.fromkeys(list(ALL_FORMS)[:4], ""), Quota(remaining=3, limit=300)),
    ],
)
def test_forms_in_order_of_preference_and_whole(broken: dict[str, str], expected: Quota) -> None:
    assert read({**ALL_FORMS, **broken}) == expected


def test_garbage_never_raises() -> None:
    rng = random.Random(7)
    alphabet = b'"\\;=,:?*()-.0123456789 \tqrtw\xe9default'
    names = ["RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Reset"]
    names += ["X-RateLimit-Remaining", "X-RateLimit-Reset", "Date"]
    for _ in range(2000):
        fields = {name: bytes(rng.choices(alphabet, k=rng.randrange(12))) for name in names}
        found = read(fields)
        assert found is None or isinstance(found, Quota)
        if found is not None and found.reset is not None:
            assert found.reset >= 0


@pytest.mark.parametrize(
    ("q", "exhausted"),
    [
        (Quota(remaining=0, reset=5.0), True),
        (Quota(remaining=0, reset=0.0), True),
        (Quota(remaining=0), False),  # nothing left, but no word on when: not ours to wait out
        (Quota(remaining=1, reset=5.0), False),
        (Quota(reset=5.0, limit=100), False),
    ],
)
def test_exhausted(q: Quota, exhausted: bool) -> None:
    assert q.exhausted is exhausted


def test_exhausted_from_headers() -> None:
    found = read({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(SERVER_NOW + 9)})
    assert found is not None
    assert found.exhausted
    assert found.reset == 9.0


@pytest.mark.parametrize(
    ("status", "q", "limited"),
    [
        (429, None, True),
        (429, Quota(remaining=10), True),
        (403, Quota(remaining=0, reset=60.0), True),  # GitHub's way of saying 429
        (403, Quota(remaining=0), True),
        (403, Quota(remaining=1, reset=60.0), False),  # a real "forbidden"
        (403, Quota(limit=100), False),
        (403, None, False),
        (200, Quota(remaining=0, reset=60.0), False),
        (503, Quota(remaining=0, reset=60.0), False),
    ],
)
def test_rate_limited(status: int, q: Quota | None, limited: bool) -> None:
    assert rate_limited(status, q) is limited
