"""The project on a real scrapyd: the egg scrapyd-deploy builds, crawls configured by
``setting=`` parameters or by scrapyd's environment, a bad setting, cancel and resume.

Each test deploys a copy of the working tree (its ``setup.py``, ``scrapy.cfg``,
``ingest/`` and ``tests/``, so that leaving the tests out is the egg's doing):
``scrapyd-deploy`` builds in the directory of the ``scrapy.cfg`` it finds, leaving
``build/`` and ``ingest.egg-info/`` there, and the copy's ``scrapy.cfg`` can point at the
test's server without touching the real one.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.crawl import REPO_ROOT, environment, terminal_states
from tests.support.mockapi import MockAPI, ids_requested_more_than_once, statuses
from tests.support.scrapyd import Scrapyd, scrapyd_environment

PROJECT = "ingest"


def scrapyd_deploy() -> str:
    beside = Path(sys.executable).with_name("scrapyd-deploy")
    found = str(beside) if beside.is_file() else shutil.which("scrapyd-deploy")
    assert found, "scrapyd-deploy (scrapyd-client) is not installed"
    return found


def deploy(server: Scrapyd, workdir: Path) -> dict[str, Any]:
    """Run ``scrapyd-deploy`` in a copy of the project whose ``scrapy.cfg`` points at
    ``server``; scrapyd's answer."""
    project = workdir / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.db", "*.db-*")
    for name in ("ingest", "tests"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=ignore)
    shutil.copy2(REPO_ROOT / "setup.py", project / "setup.py")
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "scrapy.cfg", encoding="utf-8")
    config["deploy"]["url"] = server.url
    with (project / "scrapy.cfg").open("w", encoding="utf-8") as cfg:
        config.write(cfg)

    env = {k: v for k, v in environment().items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    done = subprocess.run(
        [scrapyd_deploy()],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["status"] == "ok", answer
    return answer


def started_pid(server: Scrapyd, job: str) -> int:
    match = re.search(rf"Process started: .* job='{job}' pid=(\d+)", server.server_log())
    assert match, server.server_log()[-3000:]
    return int(match.group(1))


def test_deployed_egg_crawls_with_settings_or_with_the_environment(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> None:
    by_settings, by_env = mockapi("--limit", "1200/60"), mockapi("--limit", "1200/60")
    settings_db = f"sqlite:///{tmp_path / 'settings.db'}"
    env_db = f"sqlite:///{tmp_path / 'env.db'}"
    server = scrapyd(
        env=scrapyd_environment(DATABASE_URL=env_db, INGEST_API_URL=by_env.url_template)
    )

    answer = deploy(server, tmp_path)
    assert answer["project"] == PROJECT and answer["spiders"] == 2  # api and list
    (egg,) = server.eggs(PROJECT)
    with zipfile.ZipFile(egg) as zipped:
        names = zipped.namelist()
        entry_points = zipped.read("EGG-INFO/entry_points.txt").decode()
    assert {"ingest/settings.py", "ingest/spiders/api.py"} <= set(names)
    assert "ingest/schemas/object.schema.json" in names
    assert not [name for name in names if name.startswith("tests/")]
    assert "settings = ingest.settings" in entry_points
    assert server.call(f"listspiders.json?project={PROJECT}")["spiders"] == ["api", "list"]

    # setting= parameters take precedence over the environment.
    with_settings = server.schedule(
        PROJECT,
        "api",
        settings={
            "API_URL": by_settings.url_template,
            "DATABASE_URL": settings_db,
            "RATELIMIT_RATE": "1200/60",
        },
        ids="1-40",
    )
    with_env = server.schedule(PROJECT, "api", settings={"RATELIMIT_RATE": "1200/60"}, ids="1-40")
    for job in (with_settings, with_env):
        server.wait_for(PROJECT, job, "finished", timeout=60)

    for job, api, db in [(with_settings, by_settings, settings_db), (with_env, by_env, env_db)]:
        log = server.log(PROJECT, "api", job)
        assert "'finish_reason': 'finished'" in log, log[-3000:]
        assert "Summary (finished: 40 stored, 0 not_found, 0 invalid, 0 failed" in log
        assert terminal_states(db) == {str(i): "stored" for i in range(1, 41)}
        assert statuses(api.requests()) == {200: 40}


def test_the_bundled_schema_is_read_from_the_egg(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> None:
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    server = scrapyd()
    deploy(server, tmp_path)
    settings = {"API_URL": api.url_template, "DATABASE_URL": db, "RATELIMIT_RATE": "6000/60"}
    job = server.schedule(PROJECT, "api", settings=settings, ids="1-3")
    server.wait_for(PROJECT, job, "finished", timeout=30)
    assert "ITEM_SCHEMA" not in server.server_log()
    assert terminal_states(db) == {"1": "stored", "2": "stored", "3": "stored"}


def bad_rate_job(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> tuple[Scrapyd, str, list[dict[str, Any]], float]:
    """A job scheduled with RATELIMIT_RATE=fast, run to its end: the server, the job id,
    the mock API's record and how long the job took from scheduling to finished."""
    api = mockapi("--limit", "none")
    server = scrapyd()
    deploy(server, tmp_path)
    settings = {
        "API_URL": api.url_template,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "RATELIMIT_RATE": "fast",
    }
    scheduled = time.monotonic()
    job = server.schedule(PROJECT, "api", settings=settings, ids="1-40")
    server.wait_for(PROJECT, job, "finished", timeout=30)
    return server, job, api.requests(), time.monotonic() - scheduled


def test_a_bad_setting_ends_the_job_before_any_request(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> None:
    server, job, record, took = bad_rate_job(mockapi, scrapyd, tmp_path)
    assert took < 15
    assert record == []
    # scrapyd logs what a job writes to stderr, tagged with its pid, and its exit code.
    pid = started_pid(server, job)
    said = re.findall(rf"\[Launcher,{pid}/stderr\] (.*?)\n(?=\d{{4}}-)", server.server_log(), re.S)
    assert said == [
        "scrapy crawl api: error: RATELIMIT_RATE must look like 100/60 (requests/seconds) "
        "or auto, got 'fast'"
    ]
    assert re.search(rf"Process died: exitstatus=2 .* job='{job}'", server.server_log())


def test_a_bad_setting_is_named_in_the_job_log(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> None:
    server, job, _, _ = bad_rate_job(mockapi, scrapyd, tmp_path)
    assert "RATELIMIT_RATE must look like 100/60" in server.log(PROJECT, "api", job)


def test_cancel_then_schedule_the_same_jobid_resumes(
    mockapi: Callable[..., MockAPI], scrapyd: Callable[..., Scrapyd], tmp_path: Path
) -> None:
    n = 200
    api = mockapi("--limit", "none")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    server = scrapyd()
    deploy(server, tmp_path)
    settings = {
        "API_URL": api.url_template,
        "DATABASE_URL": db,
        "RATELIMIT_RATE": "600/60",
    }
    job = server.schedule(PROJECT, "api", settings=settings, ids=f"1-{n}", jobid="resumable")
    server.wait_for(PROJECT, job, "running", timeout=30)
    api.wait_for(40)
    assert server.cancel(PROJECT, job) == "running"
    server.wait_for(PROJECT, job, "finished", timeout=30)
    first_log = server.log(PROJECT, "api", job)
    assert "'finish_reason': 'shutdown'" in first_log, first_log[-3000:]
    done_before = len(terminal_states(db))
    assert 40 <= done_before < n

    assert server.schedule(PROJECT, "api", settings=settings, ids=f"1-{n}", jobid=job) == job
    server.wait_for(PROJECT, job, "finished", timeout=60)
    log = server.log(PROJECT, "api", job)
    assert "Resuming crawl" in log, log[-3000:]
    assert log.count("'finish_reason': 'finished'") == 1, log[-3000:]
    assert terminal_states(db) == {str(i): "stored" for i in range(1, n + 1)}
    record = api.requests()
    assert len(ids_requested_more_than_once(record)) <= 16
    assert (server.root / "jobs" / PROJECT / "api" / job).is_dir()
