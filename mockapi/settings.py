"""What the command line decides: the settings, and the id sets and lists they name."""

from __future__ import annotations

from dataclasses import dataclass, field

from mockapi.calls import fingerprint
from mockapi.dialects import NAMES as DIALECTS
from mockapi.limits import Limit, parse_limits

PAGINATIONS = ("page", "offset", "cursor", "link", "next")


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
        if not self.ranges:
            return False
        number = int(item_id) if item_id.isascii() and item_id.isdecimal() else -1
        return any(low <= number <= high for low, high in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.names or self.ranges)


def parse_id_list(value: str) -> tuple[str, ...]:
    """`5,17-19,abc` → ("5", "17", "18", "19", "abc"), in that order."""
    ids = IdSet(value)
    if sum(high - low + 1 for low, high in ids.ranges) > 100_000:
        raise ValueError(f"at most 100000 ids, got {value!r}")
    listed: list[str] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        low, sep, high = part.partition("-")
        if sep and low.isdecimal():
            listed.extend(str(n) for n in range(int(low), int(high) + 1))
        else:
            listed.append(part)
    return tuple(listed)


def parse_tokens(value: str) -> list[str]:
    """`a,b,c` → three tokens; none may be empty or hold a space."""
    tokens = value.split(",")
    if not all(tokens) or any(" " in token for token in tokens):
        raise ValueError("tokens must be non-empty, without spaces, separated by commas")
    return tokens


def parse_token_limit(value: str) -> tuple[str, list[Limit]]:
    """`TOKEN=100/60[,5000/3600]` → the token and its limits."""
    token, sep, limits = value.rpartition("=")
    if not (sep and token):
        # The value may hold a token: say what is wrong without repeating it.
        raise ValueError("must look like TOKEN=100/60[,5000/3600]")
    return token, parse_limits(limits)


@dataclass
class Settings:
    """The server's configuration; `latency` and `error_rate` may change at runtime."""

    limits: list[Limit] = field(default_factory=lambda: [Limit(100, 60)])
    algorithm: str = "fixed"
    burst: int = 1
    nodelay: bool = True  # nginx: answer at once what the burst lets through
    limit_status: int = 429
    retry_after: str = "seconds"
    retry_after_value: int | None = None
    headers: str = "none"
    dialect: str = "none"
    reset_format: str = "delta"
    enforce_retry_after: bool = True
    not_found: IdSet = field(default_factory=IdSet)
    gone: IdSet = field(default_factory=IdSet)
    invalid: IdSet = field(default_factory=IdSet)
    wrong_id: IdSet = field(default_factory=IdSet)  # answered with another id's item
    shape: str = "mock"  # or "sku": items {"sku", "title"}, shaped as no schema here knows
    not_json: IdSet = field(default_factory=IdSet)
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    error_retry_after: int | None = None
    seed: int = 0
    latency: float = 0.0
    payload_bytes: int = 300
    tokens: list[str] = field(default_factory=list, repr=False)
    token_limits: dict[str, list[Limit]] = field(default_factory=dict, repr=False)
    shared_limits: list[Limit] = field(default_factory=list)
    max_batch: int | None = None
    max_url: int | None = None
    batch_items: str = "items"
    duplicate_ids: bool = False
    extra_ids: tuple[str, ...] = ()
    catalog: int = 1000
    pagination: str = "page"
    max_per_page: int = 100
    change_rate: float = 0.0
    not_json_page: int = 0
    count_304: bool = True

    def __post_init__(self) -> None:
        if self.dialect not in ("none", *DIALECTS):
            raise ValueError(f"dialect must be none or one of {DIALECTS}, got {self.dialect!r}")
        if self.pagination not in PAGINATIONS:
            raise ValueError(f"pagination must be one of {PAGINATIONS}, got {self.pagination!r}")
        if unknown := set(self.token_limits) - set(self.tokens):
            # Never a token in a message: a fingerprint names it as well.
            named = ", ".join(sorted(map(fingerprint, unknown)))
            raise ValueError(f"a token limit names a token that is not configured: {named}")
