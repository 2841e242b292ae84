"""The API keys: read from the settings, each named by a fingerprint, never shown whole."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.config.masking import fingerprint
from ingest.config.values import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scrapy.settings import BaseSettings

# What travels with a request (meta, JOBDIR, Redis): the key's fingerprint, never its token.
KEY_META = "api_key"
_SEPARATORS = re.compile(r"[,\n]")


@dataclass(frozen=True, slots=True)
class Key:
    """One API key: its token, its place among the keys (from 1) and its fingerprint."""

    token: str = field(repr=False)
    number: int
    count: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.token)

    def __str__(self) -> str:
        return f"key {self.number} of {self.count} ({self.fingerprint}…)"


def _masked(tokens: Sequence[str]) -> str:
    """A list of tokens as an error message may show it: each by its fingerprint."""
    return ",".join(f"{fingerprint(t)}…" if t else "" for t in tokens)


def parse_tokens(name: str, value: Any) -> tuple[str, ...]:
    """Tokens separated by commas or newlines; none may be empty or hold a space."""
    items = value if isinstance(value, list | tuple) else _SEPARATORS.split(str(value).strip())
    tokens = [str(item).strip() for item in items]
    for position, token in enumerate(tokens, 1):
        if not token or any(c.isspace() for c in token):
            what = "is empty" if not token else "holds a space"
            raise ConfigError(
                f"{name} entry {position} of {len(tokens)} {what}, got {_masked(tokens)!r}"
            )
    if len(set(tokens)) < len(tokens):
        raise ConfigError(f"{name} names the same token twice, got {_masked(tokens)!r}")
    return tuple(tokens)


def read_tokens_file(value: Any) -> tuple[str, ...]:
    """One token per line; blank lines and ``#`` comments skipped."""
    path = Path(str(value))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"API_TOKENS_FILE cannot be read, got {str(value)!r}: {reason}") from exc
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    tokens = [line for line in lines if line]
    if not tokens:
        raise ConfigError(f"API_TOKENS_FILE holds no token, got {str(value)!r}")
    return parse_tokens(f"API_TOKENS_FILE {str(value)!r}", tokens)


def load_keys(settings: BaseSettings) -> tuple[Key, ...]:
    """The keys of API_TOKEN, API_TOKENS or API_TOKENS_FILE (at most one of them)."""
    given = [n for n in ("API_TOKEN", "API_TOKENS", "API_TOKENS_FILE") if settings.get(n)]
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} are both set: use API_TOKEN for one key, API_TOKENS or "
            "API_TOKENS_FILE for several"
        )
    if not given:
        return ()
    value = settings.get(given[0])
    if given[0] == "API_TOKEN":
        tokens: tuple[str, ...] = (str(value),)
    elif given[0] == "API_TOKENS":
        tokens = parse_tokens("API_TOKENS", value)
    else:
        tokens = read_tokens_file(value)
    return tuple(Key(token, n, len(tokens)) for n, token in enumerate(tokens, 1))
