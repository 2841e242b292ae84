"""The job's ids fed as batches: cut by their place in the job, so that JOBDIR names each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import JsonRequest

    from ingest.fetching.worklist import Worklist
    from ingest.run import Run


async def batch_requests(
    run: Run, worklist: Worklist, crawler: Crawler, size: int
) -> AsyncIterator[JsonRequest]:
    """The batches of ids that need a request, as the downloader takes them: from the
    shared queue of a distributed job (``run.shared``), or from ``worklist``."""
    requests, sizer = run.requests, run.requests.sizer
    spec = requests.batching
    assert spec is not None
    if run.shared:
        group: list[str] = []
        async for id_, _ in run.shared.feed():
            group.append(id_)
            if len(group) == size:
                yield requests.batch_request(group)
                group = []
        if group:
            yield requests.batch_request(group)
        return
    again: list[str] = []
    async for number, todo in worklist.feed_groups(crawler, size):
        # As single ids do, ids with no row yet go through the duplicate filter: in a
        # batch named by its place in the job (BatchFingerprinter), so that with JOBDIR
        # a rerun does not queue again what the queue holds.
        fresh = [id_ for id_, state in todo if state is None]
        for place, part in enumerate(spec.parts(fresh, sizer.size)):
            yield requests.batch_request(part, chunk=f"{size}:{number}.{place}")
        # Ids tried before (failed, or refreshed) are scattered: gathered into full batches.
        again += [id_ for id_, state in todo if state is not None]
        while len(again) >= sizer.size:
            full, again = again[: sizer.size], again[sizer.size :]
            for part in spec.parts(full, sizer.size):
                yield requests.batch_request(part)
    for part in spec.parts(again, sizer.size):
        yield requests.batch_request(part)
