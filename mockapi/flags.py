"""The command-line flags: what each one means, and how they become Settings."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from mockapi.calls import fingerprint
from mockapi.dialects import NAMES as DIALECTS
from mockapi.limits import ALGORITHMS, Limit, parse_limits
from mockapi.settings import (
    PAGINATIONS,
    IdSet,
    Settings,
    parse_id_list,
    parse_token_limit,
    parse_tokens,
)

DESCRIPTION = """\
A rate-limited REST API serving JSON items, for the demo, the tests and the benchmarks.
It enforces quotas and records every request it answers."""

EPILOG = """\
endpoints:
  GET  /items/{id}          one item; the id is one path segment, percent-decoded once
  GET  /items?ids=1,2,3     a batch (each id percent-decoded once; one quota unit)
  POST /items/batch         a batch, body {"ids": [...]}
  GET  /items               a listing page (see --pagination), updated_since=ISO-8601
  GET  /_mock/requests      the record of every answered request (?since=N)
  GET  /_mock/items         the changed items: {id: {updated_at, version}}
  POST /_mock/reset         back to the start (record, quotas, revocations, changes)
  POST /_mock/inject        {"status", "count", "after", "retry_after", "retry_after_format"}
  POST /_mock/config        {"latency", "error_rate", "not_json_page"}
  POST /_mock/revoke        {"token": "..."}: its next requests get 401
  POST /_mock/change        {"ids": [...]}: change these items now
  POST /_mock/down          {"seconds": 30}: stop listening, connections dropped, that long"""


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ValueError with a useful message."""

    def wrapped(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return wrapped


def _number(
    kind: Callable[[str], float], low: float, high: float = math.inf
) -> Callable[[str], Any]:
    def parse(value: str) -> float:
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(f"must be in [{low:g}, {high:g}], got {value!r}")
        return number

    return _arg(parse)


def _statuses(value: str) -> tuple[int, ...]:
    return tuple(map(_number(int, 100, 599), value.split(",")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mockapi",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=_number(int, 0, 65535), default=8700, help="0: the OS picks one")
    add("--access-log", action="store_true", help="log every request (slower)")
    _quota_flags(p.add_argument_group("quotas and Retry-After"))
    _token_flags(p.add_argument_group("tokens (none configured: no auth, one quota)"))
    content = p.add_argument_group(
        "items",
        "Any id is an item, except these sets; batches and listings leave out the ids of "
        "--not-found, --gone and --not-json, and hold --invalid ones with an invalid payload.",
    )
    add = content.add_argument
    for name in ("not-found", "gone", "invalid", "not-json"):
        add(f"--{name}", type=_arg(IdSet), default=IdSet(), metavar="IDS", help="e.g. 5,17-20")
    add(
        "--wrong-id",
        type=_arg(IdSet),
        default=IdSet(),
        metavar="IDS",
        help="answer /items/{id} for these ids with the item of another id (id + 1000000), "
        "as a misrouted proxy or a cache keyed wrong would",
    )
    add(
        "--shape",
        choices=("mock", "sku"),
        default="mock",
        help='sku: every item is {"sku": "A<id>", "title": …}, no field of the bundled schema '
        "(default: mock)",
    )
    add("--payload-bytes", type=_number(int, 0), default=300, metavar="N")
    add(
        "--count-304",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether a 304 Not Modified counts against the quota; if not, it is decided "
        "before the quota and never refused for it (default: counts)",
    )
    _batch_flags(p.add_argument_group("batches (GET /items?ids=, POST /items/batch)"))
    _listing_flags(p.add_argument_group("listings (GET /items)"))
    failures = p.add_argument_group("failures and timing")
    add = failures.add_argument
    add("--error-rate", type=_number(float, 0, 1), default=0.0, help="share of 5xx answers")
    add("--error-statuses", type=_statuses, default=(500, 503), metavar="STATUS,...")
    add(
        "--error-retry-after",
        type=_number(int, 0),
        default=None,
        metavar="SECONDS",
        help="Retry-After on the error rate's 503s",
    )
    add("--seed", type=int, default=0, help="for the error rate and --change-rate")
    add("--latency", type=_number(float, 0), default=0.0, metavar="SECONDS")
    add(
        "--max-url",
        type=_number(int, 1),
        default=None,
        metavar="N",
        help="414 for a URL (path and query) longer than N bytes (default: no limit)",
    )
    args = p.parse_args(argv)
    if args.burst < 1 and args.algorithm != "nginx":
        p.error(f"--burst must be at least 1 with --algorithm {args.algorithm}, got {args.burst}")
    if args.retry_after_value is not None and args.retry_after == "none":
        p.error("--retry-after-value needs --retry-after seconds or http-date")
    if unknown := {token for token, _ in args.token_limits or []} - set(args.tokens or []):
        # A fingerprint, never the token: error messages end up in logs.
        named = ", ".join(sorted(map(fingerprint, unknown)))
        p.error(f"--token-limit names a token that no --token or --tokens gives: {named}")
    if clash := _said_by_dialect(args):
        p.error(f"{clash} cannot be used with --dialect {args.dialect}: the dialect says that")
    return args


def _said_by_dialect(args: argparse.Namespace) -> str | None:
    """The first flag given that the --dialect decides instead (GitHub lets two through)."""
    github, retry_after = args.dialect == "github", args.retry_after
    clashes = {
        "--headers": args.headers != "none",
        "--reset-format": args.reset_format != "delta",
        "--retry-after-value": args.retry_after_value is not None,
        "--retry-after": retry_after != "seconds" and (retry_after, github) != ("none", True),
        "--limit-status": args.limit_status is not None and not github,
    }
    return next((flag for flag, clash in clashes.items() if clash and args.dialect != "none"), None)


def _quota_flags(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--limit",
        dest="limits",
        metavar="N/SECONDS",
        type=_arg(parse_limits),
        default=[Limit(100, 60)],
        help="N/SECONDS[,N/SECONDS...], all applying; or none (default: 100/60)",
    )
    add("--algorithm", choices=ALGORITHMS, default="fixed")
    add(
        "--burst",
        type=_number(int, 0),
        default=1,
        help="token bucket capacity, at least 1 (default: 1); nginx: limit_req's burst, 0 too",
    )
    add(
        "--nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nginx: answer what the burst lets through at once, as limit_req's nodelay; "
        "--no-nodelay holds each until its excess has leaked (default: nodelay)",
    )
    add("--limit-status", type=int, choices=(429, 403), help="default: 429; --dialect github: 403")
    add("--retry-after", choices=("seconds", "http-date", "none"), default="seconds")
    add(
        "--retry-after-value",
        type=_number(int, 0),
        default=None,
        metavar="SECONDS",
        help="every rate-limited answer names exactly this wait (like proxies that always "
        "say 5), whatever the quota's own (not with --retry-after none)",
    )
    add("--headers", choices=("none", "x-ratelimit", "ietf", "both"), default="none")
    add(
        "--dialect",
        choices=("none", *DIALECTS),
        default="none",
        help="answer as this provider documents it (docs/dialects.md), instead of the flags "
        "above and --reset-format; github takes --limit-status and --retry-after none",
    )
    add("--reset-format", choices=("delta", "epoch"), default="delta", help="X-RateLimit-Reset")
    add(
        "--enforce-retry-after",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse requests that arrive before a Retry-After we sent (default: on)",
    )


def _token_flags(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--token",
        dest="tokens",
        action="append",
        metavar="TOKEN",
        help="require Authorization: Bearer TOKEN; repeat for several tokens, each with its "
        "own quota (--limit) and its own Retry-After block",
    )
    add(
        "--tokens",
        dest="tokens",
        action="extend",
        type=_arg(parse_tokens),
        metavar="T1,T2,...",
        help="several tokens at once",
    )
    add(
        "--token-limit",
        dest="token_limits",
        action="append",
        type=_arg(parse_token_limit),
        metavar="TOKEN=N/SECONDS[,N/SECONDS]",
        help="this token's limits instead of --limit (repeatable)",
    )
    add(
        "--shared-limit",
        dest="shared_limits",
        type=_arg(parse_limits),
        default=[],
        metavar="N/SECONDS[,N/SECONDS]",
        help="a further cap every request counts against, whatever its token (like a "
        "per-IP cap); not announced in quota headers",
    )


def _batch_flags(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--batch-items",
        default="items",
        metavar="PATH",
        help='where the items go: items → {"items": [...]} (default), result.items → '
        "nested objects, . → a bare array",
    )
    add(
        "--max-batch",
        type=_number(int, 1),
        default=None,
        metavar="N",
        help="400 for more than N ids in a request (default: no limit)",
    )
    add(
        "--duplicate-ids",
        action="store_true",
        help="an id asked for twice is answered twice (default: once)",
    )
    add(
        "--extra-ids",
        type=_arg(parse_id_list),
        default=(),
        metavar="IDS",
        help="items added to every batch answer although not asked for, e.g. 900-902",
    )


def _listing_flags(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--catalog",
        type=_number(int, 0),
        default=1000,
        metavar="N",
        help="listed items: ids 1..N (default: 1000)",
    )
    add(
        "--pagination",
        choices=PAGINATIONS,
        default="page",
        help="page: ?page=K&per_page=M; offset: ?offset=O&limit=M; cursor: ?cursor=C, "
        "next_cursor in the body; link: ?page=K, a Link header; next: ?page=K, a next URL "
        "in the body (default: page)",
    )
    add(
        "--max-per-page",
        type=_number(int, 1),
        default=100,
        metavar="N",
        help="larger page sizes are cut to N (default: 100)",
    )
    add(
        "--not-json-page",
        type=_number(int, 0),
        default=0,
        metavar="N",
        help="listing page N (from 1, in any style) is an HTML page, not JSON (default: 0, "
        'none; POST /_mock/config {"not_json_page": 0} fixes it while running)',
    )
    add(
        "--change-rate",
        type=_number(float, 0),
        default=0.0,
        metavar="R",
        help="change R random listed items per second (new updated_at and version; "
        "the same for a given --seed)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    values = {key: value for key, value in vars(args).items() if key in names}
    values["tokens"] = list(dict.fromkeys(args.tokens or []))
    values["token_limits"] = dict(args.token_limits or [])
    values["limit_status"] = args.limit_status or (403 if args.dialect == "github" else 429)
    return Settings(**values)
