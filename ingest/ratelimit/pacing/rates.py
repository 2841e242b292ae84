"""Rates: at most N requests in any period, as users write them (``100/60,5000/3600``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ingest.config.values import ConfigError


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` requests in any ``period`` seconds."""

    limit: int
    period: float

    @property
    def interval(self) -> float:
        return self.period / self.limit

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    def __str__(self) -> str:
        period = int(self.period) if self.period.is_integer() else self.period
        return f"{self.limit}/{period}"


def by_period(rates: Iterable[Rate]) -> tuple[Rate, ...]:
    """Shortest period first (it sets the pace); for equal periods, the smallest count."""
    return tuple(sorted(rates, key=lambda r: (r.period, r.limit)))


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")


AUTO = "auto"


@dataclass(frozen=True, slots=True)
class RateSetting:
    """RATELIMIT_RATE read: the rates known, and whether the limit is to be found (auto)."""

    rates: tuple[Rate, ...]
    auto: bool


def parse_rate_setting(value: Any, name: str = "RATELIMIT_RATE") -> RateSetting:
    """``100/60,5000/3600``, ``auto`` or ``auto`` with known rates: ``auto,5000/3600``."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    known = [item for item in items if str(item).strip().lower() != AUTO]
    if len(known) == len(items):
        return RateSetting(parse_rates(value, name), auto=False)
    if len(items) - len(known) > 1:
        raise ConfigError(f"{name} names auto once at most, got {value!r}")
    return RateSetting(parse_rates(known, name, shown=value) if known else (), auto=True)


def parse_rates(value: Any, name: str = "RATELIMIT_RATE", *, shown: Any = None) -> tuple[Rate, ...]:
    """Parse ``100/60`` or several comma-separated rates ``100/60,5000/3600``."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    value = value if shown is None else shown
    like = "100/60 (requests/seconds)" + (" or auto" if name == "RATELIMIT_RATE" else "")
    rates = []
    for item in items:
        match = _RATE.match(str(item))
        if not match:
            raise ConfigError(f"{name} must look like {like}, got {value!r}")
        limit, period = int(match.group(1)), float(match.group(2))
        if limit <= 0 or period <= 0 or not math.isfinite(period):
            raise ConfigError(f"{name} needs a positive count and period, got {value!r}")
        rates.append(Rate(limit, period))
    if not rates:
        raise ConfigError(f"{name} must look like {like}, got {value!r}")
    return by_period(set(rates))
