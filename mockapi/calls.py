"""One request as the mock reads it (`Call`), and the answer it gets (`Answer`)."""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote


@dataclass(frozen=True)
class Call:
    """A request to /items, taken apart: what it asks for and what it carries.

    `kind` is "item" (one id; no id when the path is not one segment), "batch" or "list".
    `problem` says why the request is malformed; it is answered 400 once let through.
    """

    kind: str = "item"
    ids: tuple[str, ...] = ()
    path: str = "/items"
    raw_path: str = "/items"
    query: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    origin: str = "http://127.0.0.1"
    authorization: str | None = field(default=None, repr=False)
    agent: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    problem: str | None = None

    @classmethod
    def item(cls, item_id: str, **fields: Any) -> Call:
        """A GET /items/{id} as a client that encodes the id would send it."""
        raw_path = "/items/" + quote(item_id, safe="")
        return cls("item", (item_id,), f"/items/{item_id}", raw_path, **fields)

    @property
    def item_id(self) -> str | None:
        return self.ids[0] if self.kind == "item" and self.ids else None


@dataclass
class Answer:
    """What a request gets; `wait` is set on a refusal for the quota: the seconds until a request
    would be allowed, for a --dialect to say."""

    status: int
    reason: str
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    wait: float | None = None
    hold: float = 0.0  # seconds the answer is held (nginx's limit_req without nodelay)


# What a proxy in front of an API may answer instead of JSON.
NOT_JSON_BODY = b"<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>"


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


# Large enough for Last-Modified too: items' times are spread over a year.
@functools.lru_cache(maxsize=65536)
def format_http_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def fingerprint(token: str) -> str:
    """What the record and messages show of a token: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class BadRequest(Exception):
    """A malformed request: answered 400 with this message."""


def json_object(**fields: Any) -> bytes:
    """A JSON object; `bytes` values are JSON already (lists of item payloads) and go in as is."""
    parts = (
        json.dumps(key).encode() + b":" + (v if isinstance(v, bytes) else json.dumps(v).encode())
        for key, v in fields.items()
    )
    return b"{" + b",".join(parts) + b"}"


def query_ids(raw_query: str) -> tuple[str, ...] | None:
    """The ids of `?ids=1,a%2Cb`, each percent-decoded once (so "%2C" is a comma in an id).

    None when the query has no `ids`; several `ids=` add up.
    """
    found: list[str] | None = None
    for pair in raw_query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) == "ids":
            found = (found or []) + [unquote(part) for part in value.split(",") if value]
    return None if found is None else tuple(found)


def body_ids(body: bytes) -> tuple[str, ...]:
    """The ids of a `{"ids": [...]}` body; numbers count as their text."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise BadRequest(f'the body must look like {{"ids": [...]}}, got {body[:100]!r}')
    return tuple(map(text_id, data["ids"]))


def text_id(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"an id must be a string or an integer, got {value!r}")
