"""The rate-limited mock API: serves /items/{id}, enforces quotas and records every request."""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import functools
import json
import logging
import math
import random
import signal
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ingest.mocklimits import (
    ALGORITHMS,
    Clock,
    Limit,
    RateLimiter,
    ceil_seconds,
    parse_limits,
)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "item.schema.json"


class IdSet:
    """Ids and inclusive numeric ranges: `5,17-20,abc`."""

    def __init__(self, value: str = "") -> None:
        self.ranges: list[tuple[int, int]] = []
        self.names: set[str] = set()
        for part in filter(None, (p.strip() for p in value.split(","))):
            low, sep, high = part.partition("-")
            if not (sep and low.isdecimal()):
                self.names.add(part)
            elif not high.isdecimal() or int(low) > int(high):
                raise ValueError(f"an id range must look like 17-20, got {part!r}")
            else:
                self.ranges.append((int(low), int(high)))

    def __contains__(self, item_id: str) -> bool:
        if item_id in self.names:
            return True
        number = int(item_id) if item_id.isascii() and item_id.isdecimal() else -1
        return any(low <= number <= high for low, high in self.ranges)


@dataclass
class Settings:
    """What the command line decides; `latency` and `error_rate` may change at runtime."""

    limits: list[Limit] = field(default_factory=lambda: [Limit(100, 60)])
    algorithm: str = "fixed"
    burst: int = 1
    limit_status: int = 429
    retry_after: str = "seconds"
    headers: str = "none"
    reset_format: str = "delta"
    enforce_retry_after: bool = True
    not_found: IdSet = field(default_factory=IdSet)
    gone: IdSet = field(default_factory=IdSet)
    invalid: IdSet = field(default_factory=IdSet)
    not_json: IdSet = field(default_factory=IdSet)
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    error_retry_after: int | None = None
    seed: int = 0
    latency: float = 0.0
    payload_bytes: int = 300
    token: str | None = field(default=None, repr=False)


@dataclass
class Injection:
    """Answer `count` requests with `status`, once `after` more have gone through normally."""

    status: int
    count: int = 1
    after: int = 0
    retry_after: float | None = None
    retry_after_format: str = "seconds"

    def __post_init__(self) -> None:
        ints = (self.status, self.count, self.after)
        if any(type(n) is not int for n in ints) or not 100 <= self.status <= 599:
            raise ValueError(f"status, count and after must be integers, got {ints}")
        if self.count < 1 or self.after < 0:
            raise ValueError(f"count must be >= 1 and after >= 0, got {ints}")
        wait = self.retry_after
        if wait is not None and (type(wait) not in (int, float) or not 0 <= wait < math.inf):
            raise ValueError(f"retry_after must be seconds >= 0, got {wait!r}")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError(
                f"retry_after_format: seconds or http-date, got {self.retry_after_format!r}"
            )


@dataclass
class Answer:
    status: int
    reason: str
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def http_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


@functools.lru_cache(maxsize=65536)
def item_payload(item_id: str, size: int, valid: bool = True) -> bytes:
    """A deterministic item of about `size` bytes; an invalid one breaks the bundled schema."""
    digest = zlib.crc32(item_id.encode())
    updated = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=digest % 31_536_000)
    item: dict[str, Any] = {
        "id": int(item_id) if item_id.isascii() and item_id.isdecimal() else item_id,
        "name": f"Item {item_id}",
        "price": digest % 100_000 / 100,
        "currency": "EUR",
        "tags": ["red", "green", "blue", "large"][digest % 3 : digest % 3 + 2],
        "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": "",
    }
    if not valid:
        del item["name"]
        item["price"] = "free"
    padding = max(0, size - len(json.dumps(item, separators=(",", ":"))))
    item["description"] = ("A thing of some use. " * (padding // 21 + 1))[:padding]
    return json.dumps(item, separators=(",", ":")).encode()


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


NOT_JSON_BODY = b"<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>"


class MockState:
    """The server's memory: limiter, pending injections, the Retry-After block, the record."""

    def __init__(self, settings: Settings, clock: Clock = time.time) -> None:
        self.settings, self.clock = settings, clock
        self.limiter = RateLimiter(settings.limits, settings.algorithm, settings.burst, clock)
        self.reset()

    def reset(self) -> None:
        self.limiter.reset()
        self.record: list[dict[str, Any]] = []
        self.injections: deque[Injection] = deque()
        self.blocked_until = -math.inf
        self.random = random.Random(self.settings.seed)

    def handle(self, item_id: str, path: str, authorization: str | None = None) -> Answer:
        """Answer one /items request arriving now, and record it."""
        now, token = self.clock(), self.settings.token
        authorized = token is None or authorization == f"Bearer {token}"
        if authorized:
            answer = self._refusal(now) or self._content(item_id)
        else:
            answer = Answer(401, "unauthorized", error_body("unauthorized"))
            answer.headers["WWW-Authenticate"] = "Bearer"
        # Set here so that it agrees with the clock behind Retry-After dates.
        answer.headers["Date"] = http_date(math.floor(now))
        if self.settings.headers != "none":
            answer.headers.update(self._quota_headers(now))
        entry = {"t": now, "status": answer.status, "path": path, "id": item_id}
        self.record.append(entry | {"reason": answer.reason, "auth": authorized})
        return answer

    def _refusal(self, now: float) -> Answer | None:
        """The answer when this request is not served: early, injected, limited or failed."""
        s = self.settings
        if s.enforce_retry_after and now < self.blocked_until:
            self.limiter.reject(now)
            return self._limited(
                "early", max(self.blocked_until - now, self.limiter.wait(now)), now
            )
        if self.injections and self.injections[0].after > 0:
            self.injections[0].after -= 1
        elif self.injections:
            return self._injected(self.injections[0], now)
        wait = self.limiter.hit(now)
        if wait > 0:
            return self._limited("limit", wait, now)
        if s.error_rate and self.random.random() < s.error_rate:
            status = self.random.choice(s.error_statuses)
            answer = Answer(status, "error", error_body(f"server error {status}"))
            if status == 503 and s.error_retry_after is not None:
                self._add_retry_after(answer, s.error_retry_after, "seconds", now, least=0)
            return answer
        return None

    def _content(self, item_id: str) -> Answer:
        s = self.settings
        if not item_id or item_id in s.not_found:
            return Answer(404, "not_found", error_body("not found"))
        if item_id in s.gone:
            return Answer(410, "gone", error_body("gone"))
        if item_id in s.not_json:
            return Answer(200, "not_json", NOT_JSON_BODY, content_type="text/html")
        valid = item_id not in s.invalid
        payload = item_payload(item_id, s.payload_bytes, valid)
        return Answer(200, "ok" if valid else "invalid", payload)

    def _limited(self, reason: str, wait: float, now: float) -> Answer:
        answer = Answer(self.settings.limit_status, reason, error_body("rate limit exceeded"))
        if self.settings.retry_after != "none":
            self._add_retry_after(answer, wait, self.settings.retry_after, now)
        return answer

    def _injected(self, injection: Injection, now: float) -> Answer:
        injection.count -= 1
        if injection.count == 0:
            self.injections.popleft()
        self.limiter.reject(now)
        answer = Answer(injection.status, "injected", error_body(f"injected {injection.status}"))
        if injection.retry_after is not None:
            fmt = injection.retry_after_format
            self._add_retry_after(answer, injection.retry_after, fmt, now, least=0)
        return answer

    def _add_retry_after(
        self, answer: Answer, wait: float, fmt: str, now: float, least: int = 1
    ) -> None:
        """Name a time no earlier than now + `wait` and, if enforcing, hold clients to it."""
        unlock: float
        if fmt == "http-date":
            unlock = ceil_seconds(now + wait)
            answer.headers["Retry-After"] = http_date(unlock)
        else:
            delay = max(least, ceil_seconds(wait))
            unlock, answer.headers["Retry-After"] = now + delay, str(delay)
        if self.settings.enforce_retry_after:
            self.blocked_until = max(self.blocked_until, unlock)

    def _quota_headers(self, now: float) -> dict[str, str]:
        quota = self.limiter.quota(now)
        if quota is None:
            return {}
        limit, remaining, reset = quota.limit, quota.remaining, ceil_seconds(quota.reset_in)
        headers = {}
        if self.settings.headers in ("x-ratelimit", "both"):
            epoch = ceil_seconds(now + quota.reset_in)
            headers["X-RateLimit-Limit"] = str(limit.count)
            headers["X-RateLimit-Remaining"] = str(remaining)
            headers["X-RateLimit-Reset"] = str(
                epoch if self.settings.reset_format == "epoch" else reset
            )
        if self.settings.headers in ("ietf", "both"):
            headers["RateLimit-Policy"] = f'"default";q={limit.count};w={limit.period:g}'
            headers["RateLimit"] = f'"default";r={remaining};t={reset}'
        return headers

    def configure(self, changes: dict[str, Any]) -> None:
        """Runtime changes: `latency` (seconds >= 0) and `error_rate` (0..1)."""
        bounds = {"latency": math.inf, "error_rate": 1.0}
        for key, value in changes.items():
            if key not in bounds:
                raise ValueError(f"only {sorted(bounds)} can change, got {key!r}")
            if type(value) not in (int, float) or not 0 <= value <= bounds[key]:
                raise ValueError(f"{key} must be a number in [0, {bounds[key]:g}], got {value!r}")
        for key, value in changes.items():
            setattr(self.settings, key, float(value))


def create_app(
    state: MockState, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
) -> web.Application:
    """The aiohttp application: /items/{id} plus the /_mock/ control endpoints."""

    async def items(request: web.Request) -> web.Response:
        answer = state.handle(
            request.match_info["id"], request.path, request.headers.get("Authorization")
        )
        if state.settings.latency > 0:
            await sleep(state.settings.latency)
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=answer.headers,
        )

    async def requests(request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.isdecimal():
            raise web.HTTPBadRequest(text=f"since must be an index >= 0, got {since!r}")
        return web.json_response({"requests": state.record[int(since) :]})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def inject(request: web.Request) -> web.Response:
        state.injections.append(Injection(**await json_object(request)))
        return web.json_response({"pending": len(state.injections)})

    async def configure(request: web.Request) -> web.Response:
        state.configure(await json_object(request))
        return web.json_response(
            {"latency": state.settings.latency, "error_rate": state.settings.error_rate}
        )

    @web.middleware
    async def bad_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"{request.path}: {exc}") from exc

    control = web.Application(middlewares=[bad_request])
    control.router.add_get("/requests", requests)
    control.router.add_post("/reset", reset)
    control.router.add_post("/inject", inject)
    control.router.add_post("/config", configure)
    app = web.Application()
    app.router.add_get("/items/{id:.*}", items)
    app.add_subapp("/_mock", control)
    return app


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, got {body!r}")
    return body


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
    p = argparse.ArgumentParser(prog="python -m ingest.mockapi", description=__doc__)
    add = p.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=_number(int, 0, 65535), default=8700, help="0: the OS picks one")
    add("--access-log", action="store_true", help="log every request (slower)")
    add(
        "--limit",
        dest="limits",
        metavar="N/SECONDS",
        type=_arg(parse_limits),
        default=[Limit(100, 60)],
        help="N/SECONDS[,N/SECONDS...], all applying; or none (default: 100/60)",
    )
    add("--algorithm", choices=ALGORITHMS, default="fixed")
    add("--burst", type=_number(int, 1), default=1, help="token bucket capacity (default: 1)")
    add("--limit-status", type=int, choices=(429, 403), default=429)
    add("--retry-after", choices=("seconds", "http-date", "none"), default="seconds")
    add("--headers", choices=("none", "x-ratelimit", "ietf", "both"), default="none")
    add("--reset-format", choices=("delta", "epoch"), default="delta", help="X-RateLimit-Reset")
    add(
        "--enforce-retry-after",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse requests that arrive before a Retry-After we sent (default: on)",
    )
    for name in ("not-found", "gone", "invalid", "not-json"):
        add(f"--{name}", type=_arg(IdSet), default=IdSet(), metavar="IDS", help="e.g. 5,17-20")
    add("--error-rate", type=_number(float, 0, 1), default=0.0)
    add("--error-statuses", type=_statuses, default=(500, 503), metavar="STATUS,...")
    add("--error-retry-after", type=_number(int, 0), default=None, metavar="SECONDS")
    add("--seed", type=int, default=0)
    add("--latency", type=_number(float, 0), default=0.0, metavar="SECONDS")
    add("--payload-bytes", type=_number(int, 0), default=300, metavar="N")
    add("--token", help="require Authorization: Bearer TOKEN")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    return Settings(**{key: value for key, value in vars(args).items() if key in names})


async def serve(args: argparse.Namespace) -> None:
    state = MockState(settings_from(args))
    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    # Requests still sleeping out a long latency must not hold up a stop for a minute.
    runner = web.AppRunner(create_app(state), access_log=access_log, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    print(f"mockapi listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
