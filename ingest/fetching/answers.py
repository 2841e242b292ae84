"""Reading the API's answers: JSON strictly, the items at a path each with its text
exactly as sent, the id an item names, and why an answer is a failure."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from scrapy.http import TextResponse
from scrapy.utils.response import response_status_message

if TYPE_CHECKING:
    from scrapy.http import Response
    from twisted.python.failure import Failure

# Where the items of an answer are when no path is given: the answer itself when it
# is an array, else the first of these keys that holds one.
DEFAULT_KEYS = ("items", "data", "results")
_SPACE = re.compile(r"[ \t\n\r]*")
REASON_LENGTH = 200  # characters of a refusal's text kept in its reason


def text_of(response: Response) -> str:
    """The body as text (UnicodeDecodeError, a ValueError, when it is not)."""
    encoding = response.encoding if isinstance(response, TextResponse) else "utf-8"
    return response.body.decode(encoding)


def not_json(response: Response, exc: Exception) -> str:
    kind = (response.headers.get("Content-Type") or b"?").decode("latin-1")
    return f"not JSON ({kind}): {exc}"


def refusal(response: Response, *, with_text: bool = False) -> str:
    """Why an answer is a failure: its status, the server's words (a 4xx to a batch),
    and the retries it took."""
    reason = response_status_message(response.status)
    if with_text and 400 <= response.status < 500:
        try:
            text = " ".join(text_of(response).split())
        except ValueError:
            text = ""
        if text:
            reason += f": {text[:REASON_LENGTH]}"
    if retries := response.meta.get("retry_times"):
        reason += f" (after {retries} retries)"
    return reason


def failure_reason(failure: Failure) -> str:
    """Why a request got no answer: the error, and the retries it took."""
    exc = failure.value
    reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if retries := failure.request.meta.get("retry_times"):  # type: ignore[attr-defined]
        reason += f" (after {retries} retries)"
    return reason


def validators_of(response: Response) -> tuple[str | None, str | None]:
    """The answer's ``ETag`` and ``Last-Modified``, which a conditional request sends back."""
    found = (response.headers.get("ETag"), response.headers.get("Last-Modified"))
    return tuple(None if v is None else v.decode("latin-1") for v in found)  # type: ignore[return-value]


class NotJson(ValueError):
    """The answer is not JSON."""


class NoItems(ValueError):
    """The answer has no array of items where the path says."""


def reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), whatever Python's json accepts."""
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=reject_constant)


def parse_json(text: str) -> Any:
    """A whole JSON text, strictly."""
    return json.loads(text, parse_constant=reject_constant)


def describe(path: tuple[str, ...] | None) -> str:
    if path is None:
        return "the answer itself or its first array of " + ", ".join(DEFAULT_KEYS)
    return ".".join(path)


def items_at(text: str, path: tuple[str, ...] | None) -> list[tuple[Any, str]]:
    """Each item of the array at ``path`` in the JSON ``text``: its value, and its text
    exactly as in the answer (what storage keeps). Raises :class:`NotJson` or
    :class:`NoItems`.

    Each item is decoded once, and values before it on the path are skipped by the C
    decoder; what follows the array in an enclosing object is not read."""
    try:
        start = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
        found = _walk(text, start, path)
        if found is None and text[start] not in "[{":
            _DECODER.raw_decode(text, start)  # a scalar, or not JSON at all
    except IndexError:
        raise NotJson("the answer ends early") from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None
    if found is None:
        raise NoItems(f"no array at {describe(path)}")
    return found


def _walk(text: str, at: int, path: tuple[str, ...] | None) -> list[tuple[Any, str]] | None:
    if path is None:
        if text[at] == "[":
            items, end = _array(text, at)
            if _SPACE.match(text, end).end() != len(text):  # type: ignore[union-attr]
                raise ValueError(f"extra data at character {end}")
            return items
        for key in DEFAULT_KEYS:
            value_at = _member(text, at, key)
            if value_at is not None and text[value_at] == "[":
                return _array(text, value_at)[0]
        return None
    for key in path:
        found = _member(text, at, key)
        if found is None:
            return None
        at = found
    return _array(text, at)[0] if text[at] == "[" else None


def _member(text: str, at: int, key: str) -> int | None:
    """Where the value of ``key`` starts in the object at ``at`` (None: absent, or no object)."""
    if text[at] != "{":
        return None
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at] == "}":
        return None
    while True:
        name, at = _DECODER.raw_decode(text, at)
        if not isinstance(name, str):
            raise ValueError(f"expected a key at character {at}")
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if text[at] != ":":
            raise ValueError(f"expected ':' at character {at}")
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        if name == key:
            return at
        at = _SPACE.match(text, _DECODER.raw_decode(text, at)[1]).end()  # type: ignore[union-attr]
        if text[at] == "}":
            return None
        if text[at] != ",":
            raise ValueError(f"expected ',' at character {at}")
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _array(text: str, at: int) -> tuple[list[tuple[Any, str]], int]:
    """The items of the array at ``at``, and where it ends."""
    items: list[tuple[Any, str]] = []
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at] == "]":
        return items, at + 1
    while True:
        value, end = _DECODER.raw_decode(text, at)
        items.append((value, text[at:end]))
        at = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if text[at] == "]":
            return items, at + 1
        if text[at] != ",":
            raise ValueError(f"expected ',' at character {at}")
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def id_of(item: Any, id_field: str) -> str | None:
    """The id an item names, as text (``7`` and ``"7"`` are the same id); None if none."""
    if not isinstance(item, dict):
        return None
    value = item.get(id_field)
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
