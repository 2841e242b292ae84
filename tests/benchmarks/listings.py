"""Listings, incremental sync and conditional refresh, measured from the mock API's record.

    python -m tests.benchmarks.listings styles [--style page] [--n 10000] [--rate 100/60]
    python -m tests.benchmarks.listings resume [--how kill|sigint-twice|pg-restart] [--after 40]
    python -m tests.benchmarks.listings incremental [--n 10000] [--changed 50]
    python -m tests.benchmarks.listings conditional [--n 1000] [--changed 10] [--full]
    python -m tests.benchmarks.listings details [--n 2000] [--rate 2000/60] [--batch-rate 60/60]
                                                [--after 1000] [--stop-only --how pg-restart]

``styles``: N items listed per-page a page at the rate, in each style (all by default),
against a mock whose limit is that rate (a fixed window): page requests, 429s, the span
from the first to the last request against the ideal for that many requests, and
whether every item was stored once.

``resume``: the same listing (cursor style) stopped after ``--after`` pages by kill -9,
two Ctrl-Cs, or a PostgreSQL restart while it runs, then the same command again:
pages re-sent, items stored, rows beyond one per id.

``incremental``: N items listed once with ``since=updated_at:updated_since``, then
``--changed`` of them changed, and the same command again: its page requests, and
which rows it stored.

``conditional``: N ids fetched one by one (from a mock with no limit), ``--changed``
changed, then ``refresh=1`` against a mock at the rate whose limit does not count 304s,
with ``RATELIMIT_COUNT_304=false``: statuses, rows changed, and its span against a full
refresh at the rate (the ideal one, or, with ``--full``, measured: ``COUNT_304`` true).

``details``: N ids listed per-page a page with ``details=1``, each then fetched by
``API_URL`` one a request at ``--rate``, then (a new database) 50 a batch at
``--batch-rate``, each against a mock whose limit is that rate: page and detail
requests, 429s, the span against the ideal (every request spaced at the limit), every
id stored once. Then, one a request again, kill -9 after ``--after`` requests (details
under way) and the same command: re-sent pages and re-sent detail requests. With
``--stop-only``, only that, stopped as ``--how`` says (as for ``resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.support.crawl import (
    REPO_ROOT,
    crawl,
    crawl_list,
    duplicate_rows,
    environment,
    list_command,
    query,
    terminal_states,
)
from tests.support.mockapi import MockAPI, span, statuses

STYLES = {  # mock's --pagination: (the spider's pagination, the page size parameter)
    "page": ("page:page", "per_page"),
    "offset": ("offset:offset", "limit"),
    "cursor": ("cursor:cursor=next_cursor", "per_page"),
    "link": ("link", "per_page"),
    "next": ("auto", "per_page"),
}


def ideal(requests: int, rate: str) -> float:
    limit, period = rate.split("/")
    return max(requests - 1, 1) * float(period) / int(limit)


def stored_once(db: str, n: int) -> str:
    states = terminal_states(db)
    return (
        f"{len(states)} ids {dict(Counter(states.values()))}, all of 1..{n}: "
        f"{set(states) == {str(i) for i in range(1, n + 1)}}, rows beyond one per id "
        f"{duplicate_rows(db)}"
    )


@contextlib.contextmanager
def database(postgres: bool) -> Iterator[tuple[str, Any]]:
    if not postgres:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/listing.db", None
        return
    from tests.support.postgres import running_postgres

    with running_postgres(durable=True) as server, server.database() as url:
        yield url, server


def styles(which: list[str], n: int, per_page: int, rate: str, postgres: bool) -> None:
    for style in which:
        pagination, size = STYLES[style]
        with (
            MockAPI("--limit", rate, "--algorithm", "fixed", "--catalog", str(n),
                    "--pagination", style, "--max-per-page", str(per_page)) as api,
            database(postgres) as (db, _),
        ):  # fmt: skip
            began = time.monotonic()
            done = crawl_list(f"{api.base}/items?{size}={per_page}", db,
                              "-a", f"pagination={pagination}", RATELIMIT_RATE=rate)  # fmt: skip
            wall = time.monotonic() - began
            record = api.requests()
            pages = Counter(entry["query"] for entry in record)
            print(f"styles {style} ({pagination}): {n} items, {per_page} a page, rate {rate}, "
                  f"exit {done.returncode}, wall {wall:.1f} s")  # fmt: skip
            twice = sum(c > 1 for c in pages.values())
            print(f"  requests {len(record)} {dict(statuses(record))}, 429s "
                  f"{statuses(record)[429]}, pages asked twice {twice}")  # fmt: skip
            print(f"  span {span(record):.2f} s, ideal {ideal(len(record), rate):.2f} s, "
                  f"ratio {span(record) / ideal(len(record), rate):.4f}")  # fmt: skip
            print(f"  {stored_once(db, n)}")


def stop(process: subprocess.Popen[Any], how: str, server: Any) -> None:
    """kill -9, two Ctrl-Cs, or PostgreSQL stopped for 5 s, while the crawl runs."""
    if how == "kill":
        process.kill()
    elif how == "sigint-twice":
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
    else:
        with server.stopped():
            time.sleep(5)


def resume(how: str, after: int, n: int, per_page: int, rate: str) -> None:
    pagination, size = STYLES["cursor"]
    with (
        MockAPI("--limit", rate, "--catalog", str(n), "--pagination", "cursor") as api,
        database(how == "pg-restart") as (db, server),
    ):
        url = f"{api.base}/items?{size}={per_page}"
        command = list_command(url, db, "-a", f"pagination={pagination}", RATELIMIT_RATE=rate)
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        api.wait_for(after, timeout=600)
        stop(process, how, server)
        first = process.wait(timeout=900)
        done = crawl_list(url, db, "-a", f"pagination={pagination}", RATELIMIT_RATE=rate)
        record = api.requests()
        pages = Counter(entry["query"] for entry in record)
        print(f"resume after {how} at page {after}: {n} items, {per_page} a page, rate {rate}; "
              f"exits {first}, {done.returncode}")  # fmt: skip
        print(f"  page requests {len(record)} {dict(statuses(record))}, distinct pages "
              f"{len(pages)}, re-sent pages {len(record) - len(pages)}")  # fmt: skip
        print(f"  {stored_once(db, n)}")


def incremental(n: int, per_page: int, changed: int, rate: str) -> None:
    with (
        MockAPI("--limit", rate, "--catalog", str(n), "--pagination", "link") as api,
        database(False) as (db, _),
    ):
        url = f"{api.base}/items?per_page={per_page}"
        args = ("-a", "pagination=link", "-a", "since=updated_at:updated_since")
        first = crawl_list(url, db, *args, RATELIMIT_RATE=rate)
        before, listed = time.time(), len(api.requests())
        ids = {str(i) for i in range(1, n + 1, max(1, n // changed))}
        ids = set(sorted(ids, key=int)[:changed])
        api.change(sorted(ids))
        second = crawl_list(url, db, *args, RATELIMIT_RATE=rate)
        record = api.requests()[listed:]
        rows = query(db, "SELECT id, fetched_at FROM items")
        fresh = {id_ for id_, at in rows if at > before}
        print(f"incremental: {n} items, {per_page} a page, {changed} changed; exits "
              f"{first.returncode}, {second.returncode}")  # fmt: skip
        print(f"  first run {listed} page requests; second run {len(record)} "
              f"{dict(statuses(record))}: {record[0]['query'] if record else ''}")  # fmt: skip
        print(f"  rows stored by the second run {len(fresh)}, exactly the changed ones: "
              f"{fresh == ids}")  # fmt: skip


def conditional(n: int, changed: int, rate: str, full: bool) -> None:
    with (
        MockAPI("--limit", "none") as seed,
        MockAPI("--limit", rate, "--no-count-304") as api,
        database(False) as (db, _),
    ):
        first = crawl(seed.url_template, db, "-a", f"ids=1-{n}", RATELIMIT_RATE="60000/60")
        # The two mocks serve the same payloads, validators included: change the second's.
        ids = {str(i) for i in range(1, n + 1, max(1, n // changed))}
        ids = set(sorted(ids, key=int)[:changed])
        api.change(sorted(ids))
        before = dict(query(db, "SELECT id, data FROM items"))
        refresh = ("-a", f"ids=1-{n}", "-a", "refresh=1")
        began = time.monotonic()
        done = crawl(
            api.url_template, db, *refresh, RATELIMIT_RATE=rate, RATELIMIT_COUNT_304="false"
        )
        wall = time.monotonic() - began
        record = api.requests()
        after = dict(query(db, "SELECT id, data FROM items"))
        different = {i for i in after if after[i] != before.get(i)}
        paced = ideal(n, rate)
        print(f"conditional: {n} ids, {changed} changed, rate {rate}; exits {first.returncode}, "
              f"{done.returncode}")  # fmt: skip
        print(f"  refresh requests {len(record)} {dict(statuses(record))}; rows changed "
              f"{len(different)}, exactly the changed ids: {different == ids}")  # fmt: skip
        print(f"  refresh span {span(record):.2f} s (wall {wall:.1f} s); a full refresh at "
              f"{rate}: ideal {paced:.1f} s -> {100 * span(record) / paced:.1f}%")  # fmt: skip
        summary = [line for line in done.stderr.splitlines() if "Summary (" in line]
        print(f"  the crawl's summary: {summary[-1].split('Summary ', 1)[1] if summary else '—'}")
        if full:
            mark = len(record)
            crawl(api.url_template, db, *refresh, RATELIMIT_RATE=rate)
            measured = span(api.requests()[mark:])
            print(f"  measured full refresh (RATELIMIT_COUNT_304 true) {measured:.1f} s -> "
                  f"{100 * span(record) / measured:.1f}%")  # fmt: skip


def details_run(api: MockAPI, db: str, n: int, rate: str, batch: int) -> str:
    """What a details crawl's record says: pages, details, 429s, span against the ideal."""
    record = api.requests()
    pages = [entry for entry in record if not entry["ids"]]
    asked = Counter(id_ for entry in record for id_ in entry["ids"])
    return (
        f"  page requests {len(pages)}, detail requests {len(record) - len(pages)} "
        f"({batch} id{'s' if batch > 1 else ''} a request), 429s {statuses(record)[429]}, "
        f"ids asked twice {sum(c > 1 for c in asked.values())}\n"
        f"  span {span(record):.2f} s, ideal {ideal(len(record), rate):.2f} s, ratio "
        f"{span(record) / ideal(len(record), rate):.4f}\n  {stored_once(db, n)}"
    )


def details(
    n: int, per_page: int, rate: str, batch_rate: str, *, after: int, how: str | None
) -> None:
    url_args = ("-a", "pagination=page:page", "-a", "details=1")
    for batch, pace in ((1, rate), (50, batch_rate)) if how is None else ():
        with (
            MockAPI("--limit", pace, "--catalog", str(n)) as api,
            database(False) as (db, _),
        ):
            settings: dict[str, Any] = {"API_URL": api.url_template, "RATELIMIT_RATE": pace}
            if batch > 1:
                settings |= {"API_BATCH_SIZE": batch, "API_BATCH_URL": api.batch_url_template}
            began = time.monotonic()
            done = crawl_list(f"{api.base}/items?per_page={per_page}", db, *url_args,
                              timeout=1800, **settings)  # fmt: skip
            print(f"details: {n} ids, {per_page} a page, rate {pace}, exit {done.returncode}, "
                  f"wall {time.monotonic() - began:.1f} s")  # fmt: skip
            print(details_run(api, db, n, pace, batch))
    how = how or "kill"
    with (
        MockAPI("--limit", rate, "--catalog", str(n)) as api,
        database(how == "pg-restart") as (db, server),
    ):
        settings = {"API_URL": api.url_template, "RATELIMIT_RATE": rate}
        url = f"{api.base}/items?per_page={per_page}"
        process = subprocess.Popen(
            list_command(url, db, *url_args, **settings), cwd=REPO_ROOT, env=environment(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        api.wait_for(after, timeout=900)
        stop(process, how, server)
        first = process.wait(timeout=900)
        stopped = api.requests()
        listed = query(db, "SELECT count(*) FROM listed")[0][0]
        left = listed - len(terminal_states(db))
        done = crawl_list(url, db, *url_args, timeout=1800, **settings)
        record = api.requests()
        pages = Counter(entry["query"] for entry in record if not entry["ids"])
        asked = Counter(id_ for entry in record for id_ in entry["ids"])
        print(f"details, {how} after {after} requests: {listed} ids listed, {left} of "
              f"them without an outcome; exits {first}, {done.returncode}")  # fmt: skip
        print(f"  rerun: {len(record) - len(stopped)} requests; re-sent pages "
              f"{sum(pages.values()) - len(pages)}, re-sent detail requests "
              f"{sum(asked.values()) - len(asked)}, 429s {statuses(record)[429]}")  # fmt: skip
        print(f"  {stored_once(db, n)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cases = ["styles", "resume", "incremental", "conditional", "details"]
    parser.add_argument("case", choices=cases)
    parser.add_argument("--style", action="append", choices=sorted(STYLES))
    parser.add_argument("--how", choices=["kill", "sigint-twice", "pg-restart"], default="kill")
    parser.add_argument("--stop-only", action="store_true", help="details: only the --how stop")
    parser.add_argument(
        "--after", type=int, help="pages answered before the stop (details: requests; 1000)"
    )
    parser.add_argument("--n", type=int)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--changed", type=int)
    parser.add_argument("--rate", help="default: 100/60 (details: 2000/60)")
    parser.add_argument("--batch-rate", default="60/60", help="details: 50 ids a request")
    parser.add_argument("--postgres", action="store_true", help="styles: into PostgreSQL")
    parser.add_argument("--full", action="store_true", help="conditional: measure a full refresh")
    a = parser.parse_args()
    if a.case == "details":
        how = a.how if a.stop_only else None
        rate, after = a.rate or "2000/60", a.after or 1000
        details(a.n or 2000, a.per_page, rate, a.batch_rate, after=after, how=how)
        return
    a.rate = a.rate or "100/60"
    if a.case == "styles":
        styles(a.style or list(STYLES), a.n or 10_000, a.per_page, a.rate, a.postgres)
    elif a.case == "resume":
        resume(a.how, a.after or 40, a.n or 10_000, a.per_page, a.rate)
    elif a.case == "incremental":
        incremental(a.n or 10_000, a.per_page, a.changed or 50, a.rate)
    else:
        conditional(a.n or 1000, a.changed or 10, a.rate, a.full)


if __name__ == "__main__":
    main()
