"""Real rate limiters in front of the mock API: nginx's limit_req and an HAProxy stick table.

Each starts its server on a free port of 127.0.0.1 in front of a mock API with no limit
of its own, configured as its documentation describes, and reads back its own access log
as the record of every request it received (time, status, id), refused ones included:

- **nginx** (ngx_http_limit_req_module): ``limit_req_zone $binary_remote_addr
  zone=api:1m rate=<N>r/m``, ``limit_req zone=api burst=<B> [nodelay]``,
  ``limit_req_status 429``: a leaky bucket on nginx's millisecond clock; without
  ``nodelay`` what the burst lets through is held until its excess has leaked. No
  Retry-After. The time of a request is ``$msec - $request_time``.
- **HAProxy** (stick tables): ``stick-table type ip ... store http_req_rate(<P>s)``,
  ``http-request track-sc0 src``, then ``http-request deny deny_status 429 hdr
  Retry-After <R> if { sc_http_req_rate(0) gt <L> }``: every request is tracked, refused
  or not (a sliding window counter: the current period's count plus the previous one's,
  weighted). The time of a request is taken when it comes in (``date(0,ms)``).

Both are installed with apt when missing (and this runs as root), as scripts/test
installs redis-server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy"}


def ensure(binary: str) -> str:
    """The path of ``binary`` (nginx or haproxy), installed with apt if missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{binary} is needed: apt-get install {PACKAGES[binary]}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", PACKAGES[binary]], check=True, env=env,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # Debian starts the service it installs: this one runs only the benchmark's own.
    subprocess.run(["service", binary, "stop"], check=False, capture_output=True)
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin")
    if not found:
        raise RuntimeError(f"{binary} is not on PATH after installing {PACKAGES[binary]}")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the front exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Front:
    """A server in front of the mock API: its URL template, and its record."""

    def __init__(self, name: str, port: int, log: Path, parse: Any) -> None:
        self.name, self.port, self.log, self._parse = name, port, log, parse
        self.base = f"http://127.0.0.1:{port}"
        self.url_template = self.base + "/items/{id}"

    def requests(self) -> list[dict[str, Any]]:
        """Every request the front received, in order of arrival: ``t`` (epoch seconds),
        ``status``, ``id`` (of /items/{id})."""
        entries = []
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            entry = self._parse(line)
            if entry is not None:
                entries.append(entry)
        return sorted(entries, key=lambda entry: entry["t"])


def _item_id(uri: str) -> str | None:
    path = uri.split("?", 1)[0]
    return unquote(path.removeprefix("/items/")) if path.startswith("/items/") else None


NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format ratelimit '$msec $request_time $status $request_uri';
  access_log {dir}/access.log ratelimit;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  limit_req_zone $binary_remote_addr zone=api:1m rate={per_minute}r/m;
  limit_req_status 429;
  upstream mock {{ server 127.0.0.1:{upstream}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      limit_req zone=api{burst}{nodelay};
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def _nginx_entry(line: str) -> dict[str, Any] | None:
    parts = line.split()
    if len(parts) != 4:
        return None
    msec, took, status, uri = parts
    return {"t": float(msec) - float(took), "status": int(status), "id": _item_id(uri)}


@contextmanager
def nginx(upstream: int, per_minute: int, burst: int, *, nodelay: bool) -> Iterator[Front]:
    """nginx with ``limit_req`` at ``per_minute`` requests a minute and ``burst``, in
    front of the mock API listening on ``upstream``."""
    binary = ensure("nginx")
    with tempfile.TemporaryDirectory(prefix="nginx-front-") as folder:
        port = free_port()
        conf = Path(folder) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=folder, per_minute=per_minute, upstream=upstream, port=port,
                # nginx takes no "burst=0": without the parameter the burst is 0.
                burst=f" burst={burst}" if burst else "",
                nodelay=" nodelay" if nodelay and burst else "",
            )
        )  # fmt: skip
        process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", folder], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_listening(port, process)
            yield Front("nginx", port, Path(folder) / "access.log", _nginx_entry)
        finally:
            process.terminate()
            process.wait(timeout=15)


HAPROXY_CONF = """
global
  log stdout format raw local0
defaults
  mode http
  log global
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend api
  bind 127.0.0.1:{port}
  stick-table type ip size 1m expire {expire}s store http_req_rate({period}s)
  http-request set-var(txn.arrived) date(0,ms)
  http-request track-sc0 src
  acl over sc_http_req_rate(0) gt {limit}
  http-request deny deny_status 429 hdr Retry-After {retry_after} if over
  log-format "%[var(txn.arrived)] %ST %HU"
  default_backend mock
backend mock
  server mock 127.0.0.1:{upstream}
"""


def _haproxy_entry(line: str) -> dict[str, Any] | None:
    parts = line.split()
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return {"t": int(parts[0]) / 1000, "status": int(parts[1]), "id": _item_id(parts[2])}


@contextmanager
def haproxy(upstream: int, limit: int, period: int, *, retry_after: int) -> Iterator[Front]:
    """HAProxy refusing (429, ``Retry-After: retry_after``) a client whose
    ``http_req_rate(period)`` is over ``limit``, in front of the mock API on ``upstream``."""
    binary = ensure("haproxy")
    with tempfile.TemporaryDirectory(prefix="haproxy-front-") as folder:
        port = free_port()
        conf = Path(folder) / "haproxy.cfg"
        conf.write_text(
            HAPROXY_CONF.format(
                port=port, expire=max(60, 6 * period), period=period, limit=limit,
                retry_after=retry_after, upstream=upstream,
            )
        )  # fmt: skip
        log = Path(folder) / "access.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "-f", str(conf)], stdout=out, stderr=subprocess.DEVNULL
            )
            try:
                wait_listening(port, process)
                yield Front("haproxy", port, log, _haproxy_entry)
            finally:
                process.terminate()
                process.wait(timeout=15)
