"""scrapyd in a subprocess for tests: a fixture starting it on 127.0.0.1, and a client for it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.support.crawl import environment

# Talks to 127.0.0.1 only: never through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STATES = ("pending", "running", "finished")

CONFIG = """\
[scrapyd]
bind_address = 127.0.0.1
http_port = {port}
eggs_dir = {root}/eggs
logs_dir = {root}/logs
items_dir =
jobs_dir = {root}/jobs
dbs_dir = {root}/dbs
poll_interval = 0.5
max_proc = 2
"""


class ScrapydError(RuntimeError):
    """scrapyd answered a web service call with ``"status": "error"``."""


class Scrapyd:
    """``python -m scrapyd`` with its config, eggs, logs, jobs and queues under ``root``.

    It runs in ``root`` (scrapyd reads ``scrapyd.conf`` from its working directory, and
    its jobs inherit that directory) and in a process group of its own, so that stopping
    it also stops the crawls it started.
    """

    def __init__(
        self, root: Path, env: dict[str, str] | None = None, timeout: float = 20.0
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "scrapyd.log"
        self._stopped = False
        env = env if env is not None else scrapyd_environment()
        self.env = {k: v for k, v in env.items() if not k.startswith("SCRAPYD_")}
        # scrapyd takes http_port = 0 for "no TCP port": a free port is picked here, and
        # picked again should another process take it before scrapyd binds it.
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._stopped = False
            self._start()
            try:
                self._wait_until_ready(timeout)
            except BaseException:
                self.stop()
                if attempt < 2 and b"Address already in use" in self.log_path.read_bytes():
                    continue
                raise
            break

    def _start(self) -> None:
        config = CONFIG.format(root=self.root, port=self.port)
        (self.root / "scrapyd.conf").write_text(config, encoding="utf-8")
        # A file, not a pipe: a log nobody reads must not fill a pipe and stall the server.
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scrapyd"],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                # These win over every config file scrapyd reads (~/.scrapyd.conf included).
                env={
                    **self.env,
                    "SCRAPYD_BIND_ADDRESS": "127.0.0.1",
                    "SCRAPYD_HTTP_PORT": str(self.port),
                },
                start_new_session=True,
            )

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with suppress(OSError), _opener.open(f"{self.url}/daemonstatus.json", timeout=2) as r:
                if json.load(r).get("status") == "ok":
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"scrapyd did not answer within {timeout}s (exit code {self.process.poll()}): "
            f"{self.server_log()[-3000:]}"
        )

    # ------------------------------------------------------------ web service

    def call(self, endpoint: str, fields: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """GET ``endpoint`` (POST when there are form ``fields``); the answer, checked."""
        if fields is None:
            request = urllib.request.Request(f"{self.url}/{endpoint}")
        else:
            body = urllib.parse.urlencode(fields).encode()
            request = urllib.request.Request(f"{self.url}/{endpoint}", data=body, method="POST")
        with _opener.open(request, timeout=30) as response:
            answer: dict[str, Any] = json.load(response)
        if answer.get("status") != "ok":
            raise ScrapydError(f"{endpoint}: {answer.get('message', answer)}")
        return answer

    def schedule(
        self,
        project: str,
        spider: str,
        *,
        settings: dict[str, Any] | None = None,
        jobid: str | None = None,
        **args: Any,
    ) -> str:
        """Schedule a crawl: ``settings`` as ``setting=NAME=VALUE`` fields, ``args`` as
        spider arguments. Returns the job id."""
        fields = [("project", project), ("spider", spider)]
        if jobid is not None:
            fields.append(("jobid", jobid))
        fields += [("setting", f"{name}={value}") for name, value in (settings or {}).items()]
        fields += [(name, str(value)) for name, value in args.items()]
        return str(self.call("schedule.json", fields)["jobid"])

    def cancel(self, project: str, job: str) -> str | None:
        """Cancel a job (SIGINT to a running one); its state before: pending, running or None."""
        prevstate = self.call("cancel.json", [("project", project), ("job", job)])["prevstate"]
        return None if prevstate is None else str(prevstate)

    def listjobs(self, project: str) -> dict[str, list[dict[str, Any]]]:
        """The project's jobs by state: ``pending``, ``running`` and ``finished``."""
        answer = self.call(f"listjobs.json?project={urllib.parse.quote(project)}")
        return {state: list(answer[state]) for state in STATES}

    def job(self, project: str, job: str) -> tuple[str, dict[str, Any]] | None:
        """(state, entry) of a job in listjobs.json, or None if scrapyd does not list it."""
        for state, entries in self.listjobs(project).items():
            for entry in entries:
                if entry["id"] == job:
                    return state, entry
        return None

    def wait_for(
        self, project: str, job: str, state: str = "finished", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll listjobs.json until ``job`` is in ``state``; its entry there.

        A job id scheduled again (to resume it) is finished once it is neither pending nor
        running: its earlier run's entry among the finished ones does not count before.
        """
        assert state in STATES, state
        deadline = time.monotonic() + timeout
        while True:
            found = self.job(project, job)
            if found is not None and found[0] == state:
                return found[1]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job} not {state} after {timeout}s (now {found and found[0]}): "
                    f"{self.server_log()[-3000:]}"
                )
            time.sleep(0.1)

    # ------------------------------------------------------------ files

    def log(self, project: str, spider: str, job: str) -> str:
        """The job's log file in ``logs_dir`` ('' if there is none)."""
        path = self.root / "logs" / project / spider / f"{job}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    def server_log(self) -> str:
        """What scrapyd itself logged, including what its jobs wrote to stdout and stderr."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def eggs(self, project: str) -> list[Path]:
        """The eggs scrapyd stores for ``project``, one per deployed version."""
        return sorted((self.root / "eggs" / project).glob("*.egg"))

    # ------------------------------------------------------------ stopping

    def stop(self, timeout: float = 5.0) -> None:
        """Stop scrapyd and every crawl it started (SIGTERM, then SIGKILL); safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        group = self.process.pid
        with suppress(ProcessLookupError):  # the group has no member left
            os.killpg(group, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # Jobs finish their graceful stop after scrapyd is gone; nothing of the group may stay.
        with suppress(ProcessLookupError):  # the group has no member left
            os.killpg(group, signal.SIGKILL)
        self.process.wait()

    def __repr__(self) -> str:
        return f"Scrapyd({self.url!r})" if hasattr(self, "url") else "Scrapyd(starting)"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrapyd_environment(**extra: str) -> dict[str, str]:
    """The test process's environment without the project's variables or PYTHONPATH, so
    that jobs import the deployed egg rather than the working tree; plus ``extra``."""
    env = environment(**extra)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def scrapyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Scrapyd]]:
    """Start scrapyd servers with `scrapyd()` or `scrapyd(env={...})`; all stop at teardown.

    ``env`` is the server's whole environment, which its jobs inherit (see
    :func:`scrapyd_environment`).
    """
    started: list[Scrapyd] = []

    def start(env: dict[str, str] | None = None) -> Scrapyd:
        started.append(Scrapyd(tmp_path_factory.mktemp("scrapyd"), env=env))
        return started[-1]

    yield start
    for server in started:
        server.stop()
