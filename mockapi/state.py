"""The server's memory and its order of decisions: quotas, injections, errors, the record."""

from __future__ import annotations

import functools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mockapi.accounts import Account, Accounts
from mockapi.calls import Answer, Call, bearer, error_body, fingerprint, format_http_date
from mockapi.catalog import Catalog
from mockapi.content import Content, served
from mockapi.dialects import make as make_dialect
from mockapi.limits import Clock, ceil_seconds
from mockapi.settings import Settings


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


class MockState:
    """Accounts and their quotas, the catalogue, pending injections, the record.

    A request is decided in this order: 414 (URL too long), 401 (no valid token), a 304 not
    counted against the quota (with count_304 off), then Retry-After enforcement, an
    injection, the quota, the error rate, and at last the content.
    """

    def __init__(self, settings: Settings, clock: Clock = time.time) -> None:
        s = settings
        self.settings, self.clock = settings, clock
        retry_after = s.retry_after != "none"
        self.dialect = make_dialect(s.dialect, status=s.limit_status, retry_after=retry_after)
        self.accounts = Accounts(settings, clock)
        listed = functools.partial(served, settings)
        self.catalog = Catalog(s.catalog, s.change_rate, s.seed, clock(), listed)
        self.content = Content(settings, self.catalog)
        # Set by the server that serves this state: stop answering for some seconds.
        self.go_down: Callable[[float], Awaitable[None]] | None = None
        self.reset()

    def reset(self) -> None:
        """Back to the start: quotas, blocks, revocations, changes, injections, the record."""
        self.accounts.reset()
        self.catalog.reset(self.clock())
        self.record: list[dict[str, Any]] = []
        self.injections: deque[Injection] = deque()
        self.random = random.Random(self.settings.seed)

    def handle(self, call: Call) -> Answer:
        """Answer one request to /items arriving now, and record it."""
        now = self.clock()
        self.catalog.advance(now)
        token = bearer(call.authorization)
        account = self.accounts.find(token)
        answer = self._answer(call, account, now)
        # Set here so that it agrees with the clock behind Retry-After dates.
        answer.headers["Date"] = format_http_date(math.floor(now))
        if account is not None:
            self._announce(account, answer, now)
        self.record.append(
            {
                "t": now,
                "status": answer.status,
                "path": call.path,
                "raw_path": call.raw_path,
                "query": call.query,
                "id": call.item_id,
                "ids": list(call.ids),
                "reason": answer.reason,
                "auth": account is not None,
                "token": None if token is None else fingerprint(token),
                "agent": call.agent,
            }
        )
        return answer

    def _answer(self, call: Call, account: Account | None, now: float) -> Answer:
        s = self.settings
        if s.max_url is not None and len(call.raw_path.encode()) > s.max_url:
            message = f"the URL is {len(call.raw_path.encode())} bytes, at most {s.max_url}"
            return Answer(414, "uri_too_long", error_body(message))
        if account is None:
            answer = Answer(401, "unauthorized", error_body("unauthorized"))
            answer.headers["WWW-Authenticate"] = "Bearer"
            return answer
        if not s.count_304 and (unchanged := self.content.not_modified(call)):
            return unchanged
        refusal = self._refusal(account, now)
        if refusal is not None:
            return refusal
        answer = self.content.answer(call)
        if account is not None:
            answer.hold = account.limiter.delay()
        return answer

    def _refusal(self, account: Account, now: float) -> Answer | None:
        """The answer when this request is not served: early, injected, limited or failed."""
        s = self.settings
        if s.enforce_retry_after and now < account.blocked_until:
            account.reject(now)
            wait = max(account.blocked_until - now, account.wait(now))
            return self._limited(account, "early", wait, now)
        if self.injections and self.injections[0].after > 0:
            self.injections[0].after -= 1
        elif self.injections:
            return self._injected(account, self.injections[0], now)
        wait = account.hit(now)
        if wait > 0:
            return self._limited(account, "limit", wait, now)
        if s.error_rate and self.random.random() < s.error_rate:
            status = self.random.choice(s.error_statuses)
            answer = Answer(status, "error", error_body(f"server error {status}"))
            if status == 503 and s.error_retry_after is not None:
                self._retry_after(account, answer, s.error_retry_after, "seconds", now=now, least=0)
            return answer
        return None

    def _announce(self, account: Account, answer: Answer, now: float) -> None:
        """The token's own quota in --headers, or as --dialect says it (and its refusals)."""
        s = self.settings
        if self.dialect is None:
            answer.headers.update(account.quota_headers(now, s.headers, s.reset_format))
            return
        said = self.dialect(account.quota(now, answer.wait), now)
        answer.headers.update(said.headers)
        if answer.wait is None:
            return
        answer.status = said.status or answer.status
        if said.body is not None:
            answer.body, answer.content_type = said.body, "application/json"
        if said.wait is not None and s.enforce_retry_after:
            account.blocked_until = max(account.blocked_until, now + said.wait)

    def _limited(self, account: Account, reason: str, wait: float, now: float) -> Answer:
        s = self.settings
        if self.dialect is not None:  # said in _announce, once the quota is known
            return Answer(s.limit_status, reason, error_body("rate limit exceeded"), wait=wait)
        answer = Answer(s.limit_status, reason, error_body("rate limit exceeded"))
        if s.retry_after == "none":
            return answer
        if s.retry_after_value is not None:
            self._retry_after(account, answer, s.retry_after_value, s.retry_after, now=now, least=0)
        else:
            self._retry_after(account, answer, wait, s.retry_after, now=now)
        return answer

    def _injected(self, account: Account, injection: Injection, now: float) -> Answer:
        injection.count -= 1
        if injection.count == 0:
            self.injections.popleft()
        account.reject(now)
        answer = Answer(injection.status, "injected", error_body(f"injected {injection.status}"))
        if injection.retry_after is not None:
            fmt = injection.retry_after_format
            self._retry_after(account, answer, injection.retry_after, fmt, now=now, least=0)
        return answer

    def _retry_after(
        self, account: Account, answer: Answer, wait: float, fmt: str, *, now: float, least: int = 1
    ) -> None:
        """Name a time no earlier than now + `wait` and, if enforcing, hold the account to it."""
        unlock: float
        if fmt == "http-date":
            unlock = ceil_seconds(now + wait)
            answer.headers["Retry-After"] = format_http_date(unlock)
        else:
            delay = max(least, ceil_seconds(wait))
            unlock, answer.headers["Retry-After"] = now + delay, str(delay)
        if self.settings.enforce_retry_after:
            account.blocked_until = max(account.blocked_until, unlock)

    def configure(self, changes: dict[str, Any]) -> None:
        """Runtime changes: `latency` (seconds >= 0), `error_rate` (0..1), `not_json_page`
        (a page number, 0: none)."""
        bounds = {"latency": math.inf, "error_rate": 1.0, "not_json_page": math.inf}
        for key, value in changes.items():
            if key not in bounds:
                raise ValueError(f"only {sorted(bounds)} can change, got {key!r}")
            if type(value) not in (int, float) or not 0 <= value <= bounds[key]:
                raise ValueError(f"{key} must be a number in [0, {bounds[key]:g}], got {value!r}")
            if key == "not_json_page" and type(value) is not int:
                raise ValueError(f"not_json_page must be a whole number, got {value!r}")
        for key, value in changes.items():
            setattr(self.settings, key, value if key == "not_json_page" else float(value))

    def change(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Change these items now; their new `updated_at` and version."""
        self.catalog.change(ids, self.clock())
        changed = self.catalog.changed()
        return {item_id: changed[item_id] for item_id in ids}

    def changed_items(self) -> dict[str, dict[str, Any]]:
        self.catalog.advance(self.clock())
        return self.catalog.changed()
