"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks, and its fixtures."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

SUPERUSER = "ingest"
SYSTEM_USER = "postgres"
PG_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
START_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries cannot be found or the server does not start."""


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running server: where it listens and how to log in."""

    host: str
    port: int
    user: str
    password: str
    bindir: Path | None = None
    root: Path | None = None  # the temporary directory: data/, server.log, the socket

    def url(self, dbname: str) -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{dbname}"
        )

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """Create a fresh, uniquely named database; yield its URL; drop it afterwards."""
        dbname = f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        try:
            yield self.url(dbname)
        finally:
            with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(dbname)
                    )
                )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server like an operator would (`pg_ctl stop -m fast` ends every session),
        keeping its data: `start()` brings it back on the same port."""
        bindir, root = self._paths()
        _run([str(bindir / "pg_ctl"), "--pgdata", str(root / "data"), "-m", mode, "stop"], root)

    def start(self) -> None:
        """Start a server stopped by `stop()` again, on the same port."""
        bindir, root = self._paths()
        data, log = root / "data", root / "server.log"
        _run(
            [str(bindir / "pg_ctl"), "--pgdata", str(data), "--log", str(log), "--wait", "start"],
            root,
        )

    @contextlib.contextmanager
    def stopped(self, mode: str = "fast") -> Iterator[None]:
        """The server is down inside the block, and running again after it, whatever happens."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    def _paths(self) -> tuple[Path, Path]:
        if self.bindir is None or self.root is None:
            raise PostgresUnavailable("this server was not started by running_postgres()")
        return self.bindir, self.root


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: from PATH, else the Debian layout."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    for candidate in sorted(Path("/").glob(PG_BINDIR_GLOB.lstrip("/")), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
        f"{PG_BINDIR_GLOB}: install the postgresql package"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(command: list[str], cwd: Path) -> None:
    """Run a server binary, as the `postgres` user when we are root (PostgreSQL refuses root)."""
    name = Path(command[0]).name
    if _as_root():
        command = ["runuser", "-u", SYSTEM_USER, "--", *command]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise PostgresUnavailable(f"{name} exited with {result.returncode}: {output}")


def _hand_over(path: Path) -> None:
    """Give the server's user the directory tree when we run as root."""
    if not _as_root():
        return
    for item in [path, *path.rglob("*")]:
        shutil.chown(item, user=SYSTEM_USER, group=SYSTEM_USER)


def _server_log(root: Path) -> str:
    log = root / "server.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a private server in a temporary directory; stop it and remove the directory after.

    `durable=False` turns fsync off, which is what tests want; benchmarks pass True.
    """
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="ingest-pg-"))
    password = f"pw:{secrets.token_urlsafe(12)}@/"
    data = root / "data"
    try:
        (root / "pwfile").write_text(password + "\n")
        _hand_over(root)
        _run(
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(root / "pwfile"),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=root,
        )
        (root / "pwfile").unlink()
        server = _start(bindir, root, data, password, durable=durable)
        try:
            yield server
        finally:
            _run([str(bindir / "pg_ctl"), "--pgdata", str(data), "-m", "immediate", "stop"], root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(bindir: Path, root: Path, data: Path, password: str, *, durable: bool) -> PostgresServer:
    conf = data / "postgresql.conf"
    base_conf = conf.read_text()
    last_error = ""
    # The port is found free, then bound by the server: another process may take it in between.
    for _ in range(START_ATTEMPTS):
        port = free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{root}'",
            "fsync": "on" if durable else "off",
            "synchronous_commit": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            "max_connections": "50",
        }
        conf.write_text(base_conf + "".join(f"\n{k} = {v}" for k, v in settings.items()) + "\n")
        try:
            _run(
                [
                    str(bindir / "pg_ctl"),
                    "--pgdata",
                    str(data),
                    "--log",
                    str(root / "server.log"),
                    "--wait",
                    "--timeout",
                    "30",
                    "start",
                ],
                cwd=root,
            )
        except PostgresUnavailable as exc:
            last_error = f"{exc}\n{_server_log(root)}"
            continue
        return PostgresServer(
            host="127.0.0.1",
            port=port,
            user=SUPERUSER,
            password=password,
            bindir=bindir,
            root=root,
        )
    raise PostgresUnavailable(f"PostgreSQL did not start: {last_error}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session; fails the tests if there is none."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres())
        except PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME of a database made for this test only."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DATABASE_URL for each backend: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ingest.db"
    url: str = request.getfixturevalue("postgres_url")
    return url
