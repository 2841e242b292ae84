"""A crawl watched as it runs: its log line by line, its /metrics, its listening sockets."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.crawl import REPO_ROOT, crawl_command, environment
from tests.support.mockapi import fetch

ENDPOINT = re.compile(r"Metrics for Prometheus at (http://\S+/metrics)")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class RunningCrawl:
    """``scrapy crawl api`` in its own process; its stderr gathered as it comes."""

    def __init__(self, api_url: str, database_url: str, *args: str, **settings: Any) -> None:
        self.process = subprocess.Popen(
            crawl_command(api_url, database_url, *args, **settings),
            cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first log line matching ``pattern``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            assert self.process.poll() is None or self._reader.is_alive(), self.log[-3000:]
            time.sleep(0.02)
        raise AssertionError(f"no log line matches {pattern!r} in {timeout}s:\n{self.log[-3000:]}")

    def finish(self, timeout: float = 120.0) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def scrape(url: str) -> tuple[str, Samples]:
    """GET /metrics with a real HTTP client: the text, and every sample by name and labels."""
    status, _, body = fetch(url)
    assert status == 200, body[:500]
    text = body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, f"{len(found)} samples of {name} with {labels}"
    return found[0]


def listening_ports(pid: int) -> set[int]:
    """TCP ports on which process ``pid`` listens (from /proc: its sockets, in LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
