"""The ids to fetch: ranges and files read lazily, each id checked, taken a chunk at a time."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from ingest.config.values import ConfigError

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


CHUNK = 500  # ids looked up in the database at once


def chunks(ids: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, size)):
        yield chunk
