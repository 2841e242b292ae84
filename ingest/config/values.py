"""Settings and arguments turned into checked values; ConfigError names the bad one."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for


class ConfigError(ValueError):
    """A bad argument or setting; the message names it and its value."""


def parse_flag(name: str, value: Any) -> bool:
    """A spider argument that is on or off: ``1`` or ``0``, as its message says."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip()
    if text in {"1", "0"}:
        return text == "1"
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


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


def check_path(name: str, value: Any) -> tuple[str, ...] | None:
    """A dotted path (``data.items``) as its keys; None or empty for the default."""
    if value is None or str(value).strip() == "":
        return None
    keys = tuple(str(value).strip().split("."))
    if any(not key for key in keys):
        raise ConfigError(f"{name} must be a dotted path like data.items, got {value!r}")
    return keys


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
