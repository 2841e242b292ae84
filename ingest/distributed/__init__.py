"""Several workers, one job: a shared queue, ids seeded once, and what a dead worker lost found.

Workers started with the same command share, through Redis, scrapy-redis's request
queue and duplicate filter (keyed by the job, not just the spider), the rate
limiter's buckets, and a little coordination:

- **seeding** (:mod:`.seeding`): one worker at a time holds a lease and turns the id
  set into requests, lazily, keeping the shared queue short; where it got to is in
  Redis, so if it dies another worker takes over from there;
- **liveness** (:mod:`.coordinator`): every worker writes a heartbeat, busy or idle;
- **completion** (:mod:`.worker`): when seeding is done, the queue is empty and every
  live worker is idle, nothing is in flight anywhere but with dead workers. One
  worker then looks in the database for ids of the set without an outcome and queues
  them again; when that finds nothing, the job is complete and every worker stops.
"""
