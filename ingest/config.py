"""User input turned into checked values: id specs, rates, the API URL, the item schema."""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jsonschema import SchemaError
from jsonschema.validators import validator_for


class ConfigError(ValueError):
    """A bad argument or setting; the message names it and its value."""


# ---------------------------------------------------------------- ids


_ID_TOKEN = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True, slots=True)
class IdRanges:
    """A set of integer ids as sorted, disjoint, inclusive ranges: enumerated lazily."""

    ranges: tuple[tuple[int, int], ...]

    def __iter__(self) -> Iterator[str]:
        for first, last in self.ranges:
            for n in range(first, last + 1):
                yield str(n)

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def describe(self) -> str:
        return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges)


def parse_ids(spec: str) -> IdRanges:
    """Parse ``1-5,9,12-20`` (inclusive ranges and single ids) without enumerating it."""
    if not spec or not spec.strip():
        raise ConfigError(f"ids must list ids or ranges like 1-5,9, got {spec!r}")
    spans: list[tuple[int, int]] = []
    for token in spec.split(","):
        match = _ID_TOKEN.match(token)
        if not match:
            raise ConfigError(
                f"ids: {token.strip()!r} is not an id or a range like 1-5 (ids={spec!r})"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ConfigError(f"ids: range {token.strip()!r} goes backwards (ids={spec!r})")
        spans.append((first, last))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return IdRanges(tuple(merged))


@dataclass(frozen=True, slots=True)
class IdFile:
    """Ids read from a file, one per line (blank lines and ``#`` comments skipped), lazily."""

    path: Path

    def __iter__(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                id_ = line.strip()
                if id_ and not id_.startswith("#"):
                    yield id_

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def describe(self) -> str:
        return str(self.path)


def check_id(id_: str) -> str | None:
    """Why ``id_`` cannot be an id (it goes into the URL as one percent-encoded path
    segment), or None when it can."""
    if id_ in {".", ".."}:
        return "'.' and '..' are not path segments a URL can hold"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in id_):
        return "it holds a control character"
    return None


def open_ids_file(value: str) -> IdFile:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"ids_file: no such file: {value!r}")
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                id_ = line.strip()
                if not id_ or id_.startswith("#"):
                    continue
                if (why := check_id(id_)) is not None:
                    raise ConfigError(
                        f"ids_file: line {number} of {value!r} is not an id ({why}): "
                        f"{line.rstrip(chr(10))!r}"
                    )
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"ids_file: cannot read {value!r}: {exc}") from exc
    return IdFile(path)


IdSource = IdRanges | IdFile


SPIDER_ARGUMENTS = ("ids", "ids_file", "refresh")
# scrapyd passes every job its id as a spider argument.
SCRAPYD_ARGUMENTS = ("_job",)


def id_source(args: dict[str, Any]) -> IdSource:
    """The spider's id set from its arguments: exactly one of ``ids`` and ``ids_file``."""
    unknown = sorted(set(args) - {*SPIDER_ARGUMENTS, *SCRAPYD_ARGUMENTS})
    if unknown:
        names = ", ".join(f"{name}={args[name]!r}" for name in unknown)
        raise ConfigError(
            f"unknown argument {names} (the api spider takes {', '.join(SPIDER_ARGUMENTS)})"
        )
    ids, ids_file = args.get("ids"), args.get("ids_file")
    if ids is not None and ids_file is not None:
        raise ConfigError(
            f"give either ids or ids_file, not both (ids={ids!r}, ids_file={ids_file!r})"
        )
    if ids is not None:
        return parse_ids(str(ids))
    if ids_file is not None:
        return open_ids_file(str(ids_file))
    raise ConfigError("the api spider needs -a ids=1-100 or -a ids_file=PATH")


def parse_flag(name: str, value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


# ---------------------------------------------------------------- rates


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


def parse_rates(value: Any, name: str = "RATELIMIT_RATE") -> tuple[Rate, ...]:
    """Parse ``100/60`` or several comma-separated rates ``100/60,5000/3600``."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    rates = []
    for item in items:
        match = _RATE.match(str(item))
        if not match:
            raise ConfigError(f"{name} must look like 100/60 (requests/seconds), got {value!r}")
        limit, period = int(match.group(1)), float(match.group(2))
        if limit <= 0 or period <= 0 or not math.isfinite(period):
            raise ConfigError(f"{name} needs a positive count and period, got {value!r}")
        rates.append(Rate(limit, period))
    if not rates:
        raise ConfigError(f"{name} must look like 100/60 (requests/seconds), got {value!r}")
    return by_period(set(rates))


def parse_int(name: str, value: Any, *, least: int | None = None) -> int:
    """An integer setting, at least ``least`` when given."""
    if isinstance(value, bool):
        value = str(value)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if least is not None and number < least:
        raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    return number


def parse_positive_int(name: str, value: Any) -> int:
    return parse_int(name, value, least=1)


def parse_seconds(name: str, value: Any, *, positive: bool = False) -> float:
    """A duration setting in seconds: >= 0, or > 0 when ``positive``."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return number


def parse_number(name: str, value: Any) -> float:
    """A positive finite number."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    return number


def parse_bool_setting(name: str, value: Any) -> bool:
    """A boolean setting, as Scrapy's ``getbool`` reads it (which raises on anything else)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if str(value) in {"True", "true"}:
        return True
    if str(value) in {"False", "false"}:
        return False
    try:
        return bool(int(str(value)))
    except ValueError:
        raise ConfigError(f"{name} must be True or False (or 1 or 0), got {value!r}") from None


# ---------------------------------------------------------------- API URL


def check_api_url(value: Any) -> str:
    """The URL template: http(s), with ``{id}`` where the id goes."""
    template = str(value or "")
    parts = urlsplit(template)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"API_URL must be an http(s) URL with {{id}}, got {template!r}")
    if template.count("{id}") != 1:
        raise ConfigError(
            f"API_URL must contain {{id}} exactly once, where the id goes, got {template!r}"
        )
    try:
        template.format(id="1")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"API_URL may hold no placeholder but {{id}}, got {template!r}") from None
    return template


def url_for(template: str, id_: str) -> str:
    """The URL of one id: the id percent-encoded whole, so that ``#``, ``?``, ``/`` or
    ``%`` in it stay part of it instead of changing which item the URL names."""
    return template.format(id=quote(id_, safe=""))


def api_key(template: str) -> str:
    """What a rate limit is keyed by: the API's scheme and host."""
    parts = urlsplit(template)
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------- schema


def read_file(path: Path) -> str | None:
    """The text of the file at ``path``, or None if there is none.

    A path that runs through a zip archive is read from inside it: scrapyd runs a
    project from its zipped egg, where paths built from ``__file__`` point into the .egg.
    """
    if path.is_file():
        return path.read_text(encoding="utf-8")
    archive = next((parent for parent in path.parents if parent.is_file()), None)
    if archive is None or not zipfile.is_zipfile(archive):
        return None
    with zipfile.ZipFile(archive) as zipped:
        try:
            return zipped.read(path.relative_to(archive).as_posix()).decode("utf-8")
        except KeyError:
            return None


def load_schema(value: Any) -> dict[str, Any]:
    """Read and check the JSON Schema file named by ITEM_SCHEMA."""
    try:
        text = read_file(Path(str(value or "")))
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"ITEM_SCHEMA {str(value)!r} is not a JSON file: {exc}") from exc
    if text is None:
        raise ConfigError(f"ITEM_SCHEMA is not a file: {str(value)!r}")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ITEM_SCHEMA {str(value)!r} is not a JSON file: {exc}") from exc
    if not isinstance(schema, dict | bool):
        raise ConfigError(f"ITEM_SCHEMA {str(value)!r} is not a JSON Schema (not an object)")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(
            f"ITEM_SCHEMA {str(value)!r} is not a valid JSON Schema: {exc.message}"
        ) from exc
    return schema if isinstance(schema, dict) else {}
