"""What a request gets once let through: one item (or 304), a batch of items, a listing page."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC

from mockapi.calls import (
    NOT_JSON_BODY,
    Answer,
    BadRequest,
    Call,
    error_body,
    format_http_date,
    json_object,
)
from mockapi.catalog import SECOND, Catalog, entity_tag
from mockapi.pages import listing_page
from mockapi.settings import Settings

# --wrong-id: the id whose item is answered instead, this much further.
WRONG_ID_OFFSET = 1_000_000


class Content:
    """The answers of /items/{id}, /items?ids= and POST /items/batch, and /items listings."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings, self.catalog = settings, catalog

    def answer(self, call: Call) -> Answer:
        try:
            if call.problem is not None:
                raise BadRequest(call.problem)
            if call.kind == "batch":
                return self.batch(call)
            if call.kind == "list":
                s = self.settings
                return listing_page(
                    call, self.catalog, s.pagination, s.max_per_page, self.render,
                    not_json_page=s.not_json_page,
                )  # fmt: skip
        except BadRequest as exc:
            return Answer(400, "bad_request", error_body(str(exc)))
        return self.not_modified(call) or self.item(call.item_id)

    def exists(self, item_id: str) -> bool:
        return served(self.settings, item_id)

    def item(self, item_id: str | None) -> Answer:
        s = self.settings
        if not item_id or item_id in s.not_found:
            return Answer(404, "not_found", error_body("not found"))
        if item_id in s.gone:
            return Answer(410, "gone", error_body("gone"))
        if item_id in s.not_json:
            return Answer(200, "not_json", NOT_JSON_BODY, content_type="text/html")
        valid = item_id not in s.invalid
        if item_id in s.wrong_id:
            other = str(int(item_id) + WRONG_ID_OFFSET) if item_id.isdecimal() else f"{item_id}-x"
            payload = self.catalog.payload(other, s.payload_bytes, valid)
            return Answer(200, "wrong_id", payload)
        if s.shape == "sku":
            return Answer(200, "ok", json_object(sku=f"A{item_id}", title=f"Item {item_id}"))
        payload = self.catalog.payload(item_id, s.payload_bytes, valid)
        answer = Answer(200, "ok" if valid else "invalid", payload)
        answer.headers.update(self._validators(item_id, payload))
        return answer

    def not_modified(self, call: Call) -> Answer | None:
        """The 304 for a conditional GET /items/{id} whose validators still hold, else None."""
        if call.if_none_match is None and call.if_modified_since is None:
            return None
        item_id = call.item_id
        if item_id is None or not self.exists(item_id):
            return None
        valid = item_id not in self.settings.invalid
        payload = self.catalog.payload(item_id, self.settings.payload_bytes, valid)
        validators = self._validators(item_id, payload)
        # As RFC 9110 says: If-None-Match, when present, decides alone.
        if call.if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in call.if_none_match.split(",")}
            fresh = "*" in tags or validators["ETag"] in tags
        else:
            fresh = not_modified_since(call.if_modified_since or "", self._modified(item_id))
        if not fresh:
            return None
        return Answer(304, "not_modified", b"", content_type=None, headers=validators)

    def _modified(self, item_id: str) -> int:
        """`updated_at` to the second, as Last-Modified can say it."""
        return self.catalog.state(item_id)[0] // SECOND

    def _validators(self, item_id: str, payload: bytes) -> dict[str, str]:
        modified = format_http_date(self._modified(item_id))
        return {"ETag": entity_tag(payload), "Last-Modified": modified}

    def batch(self, call: Call) -> Answer:
        s = self.settings
        if s.max_batch is not None and len(call.ids) > s.max_batch:
            raise BadRequest(f"at most {s.max_batch} ids per request, got {len(call.ids)}")
        wanted = list(call.ids if s.duplicate_ids else dict.fromkeys(call.ids))
        asked = set(call.ids)
        wanted += [item_id for item_id in s.extra_ids if item_id not in asked]
        items = self.render([item_id for item_id in wanted if self.exists(item_id)])
        for key in reversed([k for k in s.batch_items.split(".") if k]):
            items = json_object(**{key: items})
        return Answer(200, "ok", items)

    def render(self, ids: list[str]) -> bytes:
        """The JSON array of these items' payloads."""
        s = self.settings
        payload = self.catalog.payload
        return b"[" + b",".join(payload(i, s.payload_bytes, i not in s.invalid) for i in ids) + b"]"


def served(settings: Settings, item_id: str) -> bool:
    """Whether a JSON item (valid or not) is served for this id: what batches and lists hold."""
    s = settings
    return bool(item_id) and not (
        item_id in s.not_found or item_id in s.gone or item_id in s.not_json
    )


def not_modified_since(header: str, modified: int) -> bool:
    """Whether an If-Modified-Since date is no earlier than `modified` (seconds)."""
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 asks
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return math.floor(since.timestamp()) >= modified
