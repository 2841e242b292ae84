"""The mock API in a subprocess for tests: a client for it, a fixture, and record helpers."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "mockapi listening on "
# Talks to 127.0.0.1 only: never through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MockAPI:
    """`python -m mockapi --port 0 *args`, running until `stop()`."""

    def __init__(self, *args: str, timeout: float = 60.0) -> None:
        self.args = args
        # A file, not a pipe: an access log nobody reads must not fill a pipe and stall the
        # server. It lives as long as this object and is closed by stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr_text = ""
        command = [sys.executable, "-m", "mockapi", "--port", "0", *args]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        try:
            self.base = self._read_ready_line(timeout)
        except BaseException:
            self.stop()
            raise
        self.port = int(self.base.rsplit(":", 1)[1])
        self.url_template = self.base + "/items/{id}"
        self.batch_url_template = self.base + "/items?ids={ids}"

    def _read_ready_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    line = self.process.stdout.readline()
                    if line.startswith(READY_PREFIX):
                        return line[len(READY_PREFIX) :].strip()
                    if not line:
                        break
        self.process.kill()
        code = self.process.wait()
        raise RuntimeError(
            f"mock API {' '.join(self.args)!r} did not start within {timeout}s "
            f"(exit code {code}): {self.stderr().strip()}"
        )

    def url(self, item_id: object) -> str:
        return self.url_template.format(id=item_id)

    def batch_url(self, ids: Iterable[object]) -> str:
        """GET /items?ids=…, each id percent-encoded (a comma in an id included)."""
        encoded = ",".join(urllib.parse.quote(str(item_id), safe="") for item_id in ids)
        return self.batch_url_template.format(ids=encoded)

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="GET" if body is None else "POST"
        )
        request.add_header("Content-Type", "application/json")
        with _opener.open(request, timeout=10) as response:
            return json.load(response)

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The server's record of /items requests: t, status, path, raw_path, query, id,
        ids, reason, auth, token (a fingerprint), agent."""
        return list(self._call(f"/_mock/requests?since={since}")["requests"])

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The record once it holds ``count`` requests; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(record := self.requests()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} requests in {timeout}s"
            time.sleep(0.02)
        return record

    def reset(self) -> None:
        """Back to the start: the record, quotas, injections, revoked tokens, changed items."""
        self._call("/_mock/reset", {})

    def inject(self, **spec: Any) -> None:
        """status, count=1, after=0, retry_after=None, retry_after_format="seconds"."""
        self._call("/_mock/inject", spec)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """latency, error_rate and/or not_json_page; returns the three as now set."""
        return dict(self._call("/_mock/config", changes))

    def revoke(self, token: str) -> None:
        """From now on, requests with this token get 401."""
        self._call("/_mock/revoke", {"token": token})

    def down(self, seconds: float) -> None:
        """From a moment from now, for ``seconds``: connections refused, open ones dropped."""
        self._call("/_mock/down", {"seconds": seconds})

    def change(self, ids: Iterable[object]) -> dict[str, dict[str, Any]]:
        """Change these items now; returns their new updated_at and version."""
        return dict(self._call("/_mock/change", {"ids": [str(i) for i in ids]}))

    def changed_items(self) -> dict[str, dict[str, Any]]:
        """Every item changed so far: {id: {"updated_at": …, "version": …}}."""
        return dict(self._call("/_mock/items"))

    def stderr(self) -> str:
        """What the server wrote to stderr (its log, with --access-log) so far."""
        if not self._stderr.closed:
            self._stderr.seek(0)
            self._stderr_text = self._stderr.read().decode(errors="replace")
        return self._stderr_text

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MockAPI({self.base!r})" if hasattr(self, "base") else "MockAPI(starting)"


@pytest.fixture
def mockapi() -> Iterator[Callable[..., MockAPI]]:
    """Start mock APIs with `mockapi("--limit", "600/60", ...)`; all stop at teardown."""
    started: list[MockAPI] = []

    def start(*args: str) -> MockAPI:
        started.append(MockAPI(*args))
        return started[-1]

    yield start
    for api in started:
        api.stop()


def span(entries: Iterable[dict[str, Any]]) -> float:
    """Seconds from the first recorded request to the last (0 with fewer than two)."""
    times = [entry["t"] for entry in entries]
    return max(times) - min(times) if times else 0.0


def statuses(entries: Iterable[dict[str, Any]]) -> Counter[int]:
    return Counter(entry["status"] for entry in entries)


def ids_requested_more_than_once(entries: Iterable[dict[str, Any]]) -> set[str]:
    """Ids asked for by more than one request (or twice by one batch)."""
    counts = Counter(item_id for entry in entries for item_id in entry.get("ids", [entry["id"]]))
    return {item_id for item_id, n in counts.items() if n > 1}


def fetch(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Message, bytes]:
    """GET (POST with `data`) a URL as is; any status: (status, headers, body)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()
