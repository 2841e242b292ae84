"""Storage throughput: items/s through `Store.write` in pipeline-sized batches, per backend.

    python -m tests.benchmarks.storage [--backend sqlite|postgresql|both] [--n 50000]

PostgreSQL runs in a private temporary server with fsync on, like a real one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
import time
from collections.abc import Iterator, Sequence

from ingest.items import Outcome
from ingest.storage import open_store
from tests.support.postgres import running_postgres

# fmt: off
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "sturdy", "compact", "wireless",
    "ergonomic", "premium", "steel", "cotton", "walnut", "ceramic", "portable", "adjustable",
]
# fmt: on
TARGETS = {"sqlite": 20_000, "postgresql": 10_000}


def payload(rng: random.Random, id_: str) -> str:
    """A product-like JSON document of 1-5 KB."""
    size = rng.randint(1_000, 4_800)  # the last review overshoots by up to ~300 bytes
    doc: dict[str, object] = {
        "id": int(id_),
        "name": " ".join(rng.choices(WORDS, k=3)).title(),
        "price": round(rng.uniform(1, 999), 2),
        "currency": "EUR",
        "in_stock": rng.random() < 0.8,
        "tags": rng.sample(WORDS, k=4),
        "attributes": {w: rng.randint(0, 1000) for w in rng.sample(WORDS, k=6)},
        "created_at": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z",
        "reviews": [],
    }
    reviews: list[dict[str, object]] = []
    doc["reviews"] = reviews
    while len(json.dumps(doc)) < size:
        reviews.append(
            {
                "rating": rng.randint(1, 5),
                "author": rng.choice(WORDS),
                "text": " ".join(rng.choices(WORDS, k=rng.randint(5, 40))),
            }
        )
    return json.dumps(doc, ensure_ascii=False)


def records(n: int, seed: int) -> list[Outcome]:
    """What a crawl produces: mostly stored items, a few not found or invalid."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        id_ = str(i + 1)
        url = f"http://127.0.0.1:8000/items/{id_}"
        roll = rng.random()
        if roll < 0.02:
            out.append(Outcome(id_, "not_found", url, 404, None, "HTTP 404", time.time()))
        elif roll < 0.03:
            data = payload(rng, id_)
            out.append(Outcome(id_, "invalid", url, 200, data, "'price' is required", time.time()))
        else:
            out.append(Outcome(id_, "stored", url, 200, payload(rng, id_), None, time.time()))
    return out


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    else:
        with running_postgres(durable=True) as server, server.database() as url:
            yield url


def measure(backend: str, batch: Sequence[Outcome], batch_size: int) -> None:
    n = len(batch)
    megabytes = sum(len(r.data or "") for r in batch) / 1e6
    with database(backend) as url:
        store = open_store(url)
        store.connect()
        try:
            for label in ("first write", "rewrite"):
                started = time.perf_counter()
                for start in range(0, n, batch_size):
                    store.write(batch[start : start + batch_size])
                elapsed = time.perf_counter() - started
                print(
                    f"{backend:<10} {label:<11} {n:,} items in {elapsed:.2f} s: "
                    f"{n / elapsed:>9,.0f} items/s ({megabytes / elapsed:.0f} MB/s of JSON)"
                )
            assert sum(store.counts().values()) == n
            ids = [r.id for r in batch[:: max(1, n // 1000)]][:1000]
            started = time.perf_counter()
            store.states(ids)
            elapsed = time.perf_counter() - started
            print(f"{backend:<10} states()    {len(ids):,} ids in {elapsed * 1000:.1f} ms")
        finally:
            store.close()
    print(f"{backend:<10} target      {TARGETS[backend]:,} items/s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--n", type=int, default=50_000, help="items to write (default 50000)")
    parser.add_argument("--batch", type=int, default=500, help="records per write (default 500)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch < 1:
        parser.error(f"--n and --batch must be positive, got {args.n} and {args.batch}")
    batch = records(args.n, args.seed)
    sizes = sorted(len(r.data) for r in batch if r.data)
    print(f"{args.n:,} records, payloads {sizes[0]:,}-{sizes[-1]:,} bytes, batches of {args.batch}")
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        measure(backend, batch, args.batch)


if __name__ == "__main__":
    main()
