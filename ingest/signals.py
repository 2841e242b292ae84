"""Signals of ingest's own: what one component tells the others, through the crawler."""

# Writes fail for want of the database: fetching waits, so that no quota is spent on
# outcomes that could only pile up unwritten.
storage_unavailable = object()
# A write went through again: fetching goes on.
storage_available = object()
# A batch of outcomes was committed: ``size`` outcomes, in ``seconds`` (outages waited
# out included), for the write latency metrics show.
batch_written = object()
# The API refused one of several keys (api=, fingerprint=): no request goes on it again.
key_rejected = object()
# The rate limiter inferred the API's limit from its 429s (rate=, a Rate): what progress and
# the summary measure against from then on.
limit_inferred = object()
# The API said a quota of an hour or more (bucket=, quota=, a Quota; at=, epoch seconds):
# kept in the database, for ingest-plan and the next run.
quota_heard = object()
# An allowance of RATELIMIT_RATE is spent (bucket=, rate=, its text; until=, epoch seconds
# when the next request may go): the crawl stops; kept in the database, so that the same
# command run earlier says so before any request.
allowance_spent = object()
