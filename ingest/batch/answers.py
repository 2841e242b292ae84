"""A batch's answer read: each item matched to the id asked for, one outcome per id."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ingest.fetching.answers import NoItems, id_of, items_at, not_json, refusal, text_of
from ingest.items import FAILED, NOT_FOUND, STORED, Outcome

if TYPE_CHECKING:
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ingest.batch.spec import BatchSpec

logger = logging.getLogger(__name__)


@dataclass
class BatchAnswer:
    """What an answer to a batch says of each id asked for."""

    found: list[tuple[str, Any, str]] = field(default_factory=list)  # id, value, text
    missing: list[str] = field(default_factory=list)  # asked for, not in the answer
    unexpected: list[str] = field(default_factory=list)  # in the answer, not asked for
    nameless: int = 0  # items that name no id at API_ITEM_ID
    repeated: int = 0  # items of an id already found in the answer
    # What the items not matched hold: the fields of the first few objects (or the kinds
    # of those that are no object), to say what a wrong setting reads.
    fields: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)


# Items of an answer looked at to say what they hold.
SHOWN = 5


def misread(answer: BatchAnswer, ids: list[str], spec: BatchSpec) -> str | None:
    """Why an answer none of whose items can be matched to the ids asked for shows a
    setting wrong, naming the setting and what the items hold; None when some matched,
    or when it holds no item at all (then none of the ids exists)."""
    count = len(answer.unexpected) + answer.nameless
    if answer.found or not count:
        return None
    id_field = spec.id_field
    if not answer.fields:
        items = ".".join(spec.items) if spec.items else None
        return (
            f"API_BATCH_ITEMS={items!r}: the {count} items of a batch's answer are no objects "
            f"({', '.join(sorted(answer.kinds))}), so none has a field {id_field!r}"
        )
    if not answer.unexpected:
        return (
            f"API_ITEM_ID={id_field!r}: none of the {count} items of a batch's answer has "
            f"that field; they hold {', '.join(sorted(answer.fields))}"
        )
    return (
        f"API_ITEM_ID={id_field!r}: the {count} items of a batch's answer name ids it did not "
        f"ask for ({', '.join(answer.unexpected[:SHOWN])}), none of its {len(ids)} "
        f"({', '.join(ids[:SHOWN])}{', …' if len(ids) > SHOWN else ''})"
    )


def read_batch(
    text: str, ids: list[str], path: tuple[str, ...] | None, id_field: str
) -> BatchAnswer:
    """Each item of a batch's answer matched to the id asked for (the first item of an
    id is kept). Raises :class:`NotJson` or :class:`NoItems`."""
    answer, asked, seen = BatchAnswer(), set(ids), set()
    for value, raw in items_at(text, path):
        id_ = id_of(value, id_field)
        if id_ is None or id_ not in asked:
            if id_ is None:
                answer.nameless += 1
            else:
                answer.unexpected.append(id_)
            if len(answer.unexpected) + answer.nameless <= SHOWN:
                if isinstance(value, dict):
                    answer.fields.update(map(str, value))
                else:
                    answer.kinds.add(type(value).__name__)
        elif id_ in seen:
            answer.repeated += 1
        else:
            seen.add(id_)
            answer.found.append((id_, value, raw))
    answer.missing = [id_ for id_ in ids if id_ not in seen]
    return answer


def read_answer(response: Response, ids: list[str], spec: BatchSpec) -> BatchAnswer | str:
    """The answer to a batch of ``ids`` read; or why every id of it failed. Raises
    :class:`NoItems` when it has no items where ``API_BATCH_ITEMS`` says."""
    if not 200 <= response.status < 300:
        return refusal(response, with_text=True)
    try:
        return read_batch(text_of(response), ids, spec.items, spec.id_field)
    except NoItems:
        raise
    except ValueError as exc:  # NotJson, UnicodeDecodeError
        return not_json(response, exc)


def outcomes(
    answer: BatchAnswer | str, ids: list[str], response: Response, now: float
) -> Iterator[Outcome]:
    """One outcome per id asked for: stored (to be validated) if the answer has its item,
    not_found if not; failed, with the reason, when ``answer`` is one."""
    url, status = response.url, response.status
    if isinstance(answer, str):
        for id_ in ids:
            yield Outcome(id_, FAILED, url, status, reason=answer, fetched_at=now)
        return
    for id_, value, raw in answer.found:
        yield Outcome(id_, STORED, url, status, data=raw, payload=value, fetched_at=now)
    reason = f"not in the answer to a batch of {len(ids)} ids"
    for id_ in answer.missing:
        yield Outcome(id_, NOT_FOUND, url, status, reason=reason, fetched_at=now)


def count(stats: StatsCollector, answer: BatchAnswer, asked: int) -> None:
    """``batch/…`` stats of an answer; the first items of ids not asked for, in the log."""
    stats.inc_value("batch/requests_answered")
    stats.inc_value("batch/ids_answered", asked)
    if unexpected := [*answer.unexpected, *["None"] * answer.nameless]:
        if not stats.get_value("batch/unexpected"):
            logger.warning(
                "A batch's answer holds items of ids not asked for (%s): counted in "
                "batch/unexpected, not stored", ", ".join(unexpected[:SHOWN]),
            )  # fmt: skip
        stats.inc_value("batch/unexpected", len(unexpected))
    if answer.repeated:
        stats.inc_value("batch/repeated", answer.repeated)
