"""The most ids a request may carry: the configured size, until the server says less."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

# What a server answers to a request that carries too many ids, or too long a URL.
TOO_BIG = frozenset({400, 413, 414})


class Sizer:
    """The most ids a request may carry: ``API_BATCH_SIZE``, until the server says less.

    A batch larger than any answered so far is a probe: while one is out, other batches
    that large wait for its answer (:mod:`ingest.batch.middleware`). A batch refused as
    too big (400, 413, 414) lowers the size: halfway from the largest answered (none at
    first) to it. An answered probe raises it halfway to the smallest refused: the size
    is settled when it is one under that (or the configured size), in a few probes.
    """

    def __init__(self, size: int, *, on_settled: Callable[[int], None] = lambda size: None) -> None:
        self.size, self.configured, self.on_settled = size, size, on_settled
        self.worked = 0  # the most ids a request answered so far carried
        self.refused = size + 1  # the fewest ids a request refused as too many carried
        self.probe: tuple[str, ...] | None = None

    @property
    def settled(self) -> bool:
        return (self.worked >= self.size and self.refused - self.worked <= 1) or (
            self.worked >= self.configured
        )

    def settle(self, size: int) -> None:
        """Take a size that worked before (an earlier run's, from JOBDIR)."""
        self.size = self.worked = min(size, self.configured)
        self.refused = self.size + 1

    def may_send(self, ids: tuple[str, ...]) -> bool:
        """Whether a batch of these ids may go now (else it waits for the probe's answer)."""
        if len(ids) <= self.worked:
            return True
        if self.probe is None or self.probe == ids:
            self.probe = ids
            return True
        return False

    def answered(self, ids: tuple[str, ...], status: int) -> None:
        """Learn from an answer to a batch of these ids."""
        if self.probe == ids:
            self.probe = None
        n, settled = len(ids), self.settled
        if 200 <= status < 300 and n > self.worked:
            self.worked = n
            if n >= self.size and self.refused - n > 1:
                self.size = (n + self.refused) // 2
        elif status in TOO_BIG and n > max(1, self.worked) and n < self.refused:
            self.refused = n
            self.size = min(self.size, (self.worked + n) // 2 if self.worked else n // 2)
            logger.info("The API refused %d ids in a request (%d): trying %d", n, status, self.size)
        if self.settled and not settled:
            self.on_settled(self.size)

    def released(self, ids: tuple[str, ...]) -> None:
        """The probe got no answer (an error): another batch may probe."""
        if self.probe == ids:
            self.probe = None
