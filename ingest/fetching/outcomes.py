"""An answer read into outcomes: one id's answer, or why a request got none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from scrapy.utils.response import response_status_message

from ingest.fetching import answers
from ingest.fetching.requests import ID, ids_of
from ingest.items import FAILED, INVALID, NOT_FOUND, STORED, UNCHANGED, Outcome

if TYPE_CHECKING:
    from scrapy.http import Response
    from twisted.python.failure import Failure

GONE = frozenset({404, 410})


def outcome_of(response: Response, now: float, id_field: str) -> Outcome:
    """The outcome of the id a single request asked for, from its answer: ``invalid`` when
    the item at ``id_field`` (API_ITEM_ID) names another id (compared as text, as a batch's
    items are); when the answer has no such field, nothing is said of it."""
    outcome = Outcome(response.meta[ID], FAILED, response.url, response.status, fetched_at=now)
    if response.status in GONE:
        outcome.state, outcome.reason = NOT_FOUND, response_status_message(response.status)
    elif response.status == 304:  # asked with the stored validators: the row stands
        outcome.state = UNCHANGED
    elif 200 <= response.status < 300:
        try:
            outcome.data = answers.text_of(response)
            outcome.payload = answers.parse_json(outcome.data)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            outcome.data, outcome.reason = None, answers.not_json(response, exc)
        else:
            outcome.state = STORED
            outcome.etag, outcome.last_modified = answers.validators_of(response)
            named = answers.id_of(outcome.payload, id_field)
            if named is not None and named != outcome.id:
                outcome.state = INVALID
                outcome.reason = (
                    f"the answer is the item of id {named!r}, not of the id asked, "
                    f"{outcome.id!r} (at API_ITEM_ID {id_field!r})"
                )
    else:
        outcome.reason = answers.refusal(response)
    return outcome


def failed_outcomes(failure: Failure, now: float) -> Iterator[Outcome]:
    """A ``failed`` outcome for each id of a request that got no answer, with the error."""
    request = failure.request  # type: ignore[attr-defined]
    reason = answers.failure_reason(failure)
    for id_ in ids_of(request):
        yield Outcome(id_, FAILED, request.url, None, reason=reason, fetched_at=now)
