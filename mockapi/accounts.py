"""Who may ask and how much: bearer tokens, each with its own quota, and a cap they share."""

from __future__ import annotations

import math

from mockapi.calls import fingerprint
from mockapi.dialects import Quota
from mockapi.limits import Clock, Limit, RateLimiter, ceil_seconds, hit_all
from mockapi.settings import Settings


class Account:
    """One token's quota: its limiter (checked with the shared one), and its Retry-After block."""

    def __init__(self, limiter: RateLimiter, shared: RateLimiter) -> None:
        self.limiter, self.shared = limiter, shared
        self.blocked_until = -math.inf

    def reset(self) -> None:
        self.limiter.reset()
        self.blocked_until = -math.inf

    def wait(self, now: float) -> float:
        return max(self.limiter.wait(now), self.shared.wait(now))

    def hit(self, now: float) -> float:
        """Count one arrival against both: 0.0 if allowed, else the seconds until one would be."""
        if not self.shared.limits:
            return self.limiter.hit(now)
        return hit_all([self.limiter, self.shared], now)

    def reject(self, now: float) -> None:
        self.limiter.reject(now)
        self.shared.reject(now)

    def quota(self, now: float, wait: float | None = None) -> Quota:
        """This token's own quota, every limit of it, as a dialect is told it."""
        return Quota(tuple(self.limiter.quotas(now)), wait)

    def quota_headers(self, now: float, style: str, reset_format: str) -> dict[str, str]:
        """This token's own quota, in `style` headers; the shared cap is never announced."""
        quota = self.limiter.quota(now)
        if quota is None or style == "none":
            return {}
        limit, remaining, reset = quota.limit, quota.remaining, ceil_seconds(quota.reset_in)
        headers = {}
        if style in ("x-ratelimit", "both"):
            epoch = ceil_seconds(now + quota.reset_in)
            headers["X-RateLimit-Limit"] = str(limit.count)
            headers["X-RateLimit-Remaining"] = str(remaining)
            headers["X-RateLimit-Reset"] = str(epoch if reset_format == "epoch" else reset)
        if style in ("ietf", "both"):
            headers["RateLimit-Policy"] = f'"default";q={limit.count};w={limit.period:g}'
            headers["RateLimit"] = f'"default";r={remaining};t={reset}'
        return headers


class Accounts:
    """An account per configured token, or a single open one when no token is configured."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        s = settings

        def limiter(limits: list[Limit]) -> RateLimiter:
            return RateLimiter(limits, s.algorithm, s.burst, clock, nodelay=s.nodelay)

        self.shared = limiter(s.shared_limits)
        self.open = not s.tokens
        self.by_token: dict[str | None, Account] = {
            token: Account(limiter(s.token_limits.get(token, s.limits)), self.shared)
            for token in s.tokens
        }
        if self.open:
            self.by_token[None] = Account(limiter(s.limits), self.shared)
        self.revoked: set[str] = set()

    def find(self, token: str | None) -> Account | None:
        """The account a request with this bearer token uses; None: it is not let in."""
        if self.open:
            return self.by_token[None]
        if token is None or token in self.revoked:
            return None
        return self.by_token.get(token)

    def revoke(self, token: str) -> None:
        if self.open or token not in self.by_token:
            raise ValueError(f"no configured token has the fingerprint {fingerprint(token)}")
        self.revoked.add(token)

    def reset(self) -> None:
        """Every quota as new, and every token valid again."""
        self.shared.reset()
        for account in self.by_token.values():
            account.reset()
        self.revoked.clear()
