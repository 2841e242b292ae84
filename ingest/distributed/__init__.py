"""Several workers, one job: a shared queue, ids seeded once, and what a dead worker lost found.

Workers started with the same command share, through Redis, scrapy-redis's request
queue and duplicate filter (keyed by the job, not just the spider), the rate
limiter's buckets, and a little coordination:

- **seeding** (:mod:`.seeding`): one worker at a time holds a lease and turns the id
  set into requests, lazily, keeping the shared queue short; where it got to is in
  Redis, so if it dies another worker takes over from there;
- **a listing** (:mod:`.listing`): walked by one worker at a time under the same lease,
  its pages kept by that worker, the ids it lists (``details=1``) queued for all;
- **liveness** (:mod:`.coordinator`): every worker writes a heartbeat, busy or idle;
- **completion** (:mod:`.worker`): when seeding is done, the queue is empty and every
  live worker is idle, nothing is in flight anywhere but with dead workers. One
  worker then looks in the database for ids of the set without an outcome and queues
  them again; when that finds nothing, the job is complete and every worker stops.

**The bound.** A lease (:mod:`.leases`) lasts ``LEASE`` (15 s) unless its holder renews
it, and a heartbeat never does; a worker silent for ``DEAD_AFTER`` (10 s) is dead. So a
job with a live worker and ids without an outcome goes on within 30 s of any worker's
death, and a worker idle for ``PATIENCE`` (30 s) says in the log what it waits for.
"""
