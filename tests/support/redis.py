"""A throwaway redis-server on 127.0.0.1 for tests, and its fixtures."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

START_ATTEMPTS = 3
START_TIMEOUT = 10.0
DATABASES = 16


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServerUnavailable(RuntimeError):
    """redis-server cannot be found or does not start."""


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running server: where it listens."""

    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


def _wait_for_ping(server: RedisServer, process: subprocess.Popen[bytes]) -> bool:
    """True once the server answers; False if it exits first (e.g. the port was taken)."""
    client = redis.Redis(host=server.host, port=server.port, socket_connect_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return True
            time.sleep(0.05)
        return False
    finally:
        client.close()


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start a private redis-server that keeps nothing on disk; stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerUnavailable(
            "redis-server not found on PATH: install it (apt-get install redis-server)"
        )
    root = Path(tempfile.mkdtemp(prefix="ingest-redis-"))
    log = root / "server.log"
    try:
        # The port is found free, then bound by the server: another process may take it in between.
        for _ in range(START_ATTEMPTS):
            server = RedisServer("127.0.0.1", free_port())
            command = [binary, "--port", str(server.port), "--bind", server.host]
            command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
            command += ["--dir", str(root), "--databases", str(DATABASES)]
            with log.open("wb") as output:
                process = subprocess.Popen(command, cwd=root, stdout=output, stderr=output)
            try:
                if _wait_for_ping(server, process):
                    yield server
                    return
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        output_text = log.read_text(errors="replace")[-2000:]
        raise RedisServerUnavailable(f"redis-server did not start:\n{output_text}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


class RedisProcess:
    """A redis-server of our own that can be stopped and started again on the same port and
    directory: with ``aof``, what it holds survives (append-only file, fsync every second);
    without, a restart empties it."""

    def __init__(self, root: Path, *, aof: bool) -> None:
        self.root, self.aof = root, aof
        self.server = RedisServer("127.0.0.1", free_port())
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return self.server.url(db)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerUnavailable("redis-server not found on PATH")
        command = [binary, "--port", str(self.server.port), "--bind", self.server.host]
        command += ["--save", "", "--daemonize", "no", "--dir", str(self.root)]
        command += ["--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec"]
        with (self.root / "server.log").open("ab") as output:
            self.process = subprocess.Popen(command, cwd=self.root, stdout=output, stderr=output)
        if not _wait_for_ping(self.server, self.process):
            raise RedisServerUnavailable(f"redis-server did not start on {self.url()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (what it holds written out first, with ``aof``), or SIGKILL."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def used_memory(self) -> int:
        """Bytes the server holds (INFO memory's used_memory)."""
        with redis.Redis(host=self.server.host, port=self.server.port) as client:
            return int(client.info("memory")["used_memory"])


@contextlib.contextmanager
def restartable_redis(*, aof: bool = False) -> Iterator[RedisProcess]:
    """A :class:`RedisProcess`, started; stopped and its directory removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ingest-redis-"))
    server = RedisProcess(root, aof=aof)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole test session; fails the tests if there is none."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_redis())
        except RedisServerUnavailable as exc:
            why = str(exc)
        else:
            yield server
            return
    pytest.fail(why, pytrace=False)  # outside the except: the reason is shown once


_databases = itertools.cycle(range(DATABASES))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """redis://127.0.0.1:PORT/N: a database emptied for this test (tests run one at a time)."""
    url = redis_server.url(next(_databases))
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url
