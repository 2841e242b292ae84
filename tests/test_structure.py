"""The package's shape: every module imports, imports run one way, modules stay short."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import ingest
from tests.support.crawl import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from check_structure import problems


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(ingest.__path__, "ingest.")]
    assert "ingest.ratelimit.pacing.bucket" in names and "ingest.storage.ledger" in names
    for name in names:
        importlib.import_module(name)


def test_the_package_has_no_import_cycle_and_short_modules() -> None:
    assert problems(REPO_ROOT / "ingest") == []


def test_the_check_finds_a_cycle_and_ignores_imports_for_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Root."""\n')
    (package / "sub" / "__init__.py").write_text('"""Sub."""\n')
    (package / "a.py").write_text('"""A."""\nfrom pkg.sub import b\n')
    (package / "sub" / "b.py").write_text('"""B."""\nfrom .. import c\n')
    (package / "c.py").write_text('"""C."""\nimport pkg.a\n')
    (package / "d.py").write_text(
        '"""D."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n'
    )
    (package / "e.py").write_text('"""E."""\nfrom pkg import d\n' + "x = 1\n" * 400)
    (package / "f.py").write_text("x = 1\n")
    found = problems(package)
    assert found[0] == "import cycle: pkg.a <-> pkg.c <-> pkg.sub.b"
    assert any("e.py: 402 lines" in problem for problem in found)
    assert any("no docstring saying what pkg.f owns" in problem for problem in found)
    assert len(found) == 3  # d and e are no cycle: d imports e only for type checking


def test_the_check_fails_when_more_than_ten_modules_stand_loose(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""Root."""\n')
    for n in range(10):
        (package / f"m{n}.py").write_text(f'"""Module {n}."""\n')
    assert problems(package) == []
    (package / "m10.py").write_text('"""One more."""\n')
    (found,) = problems(package)
    assert "11 modules at the top, more than 10" in found


def test_the_egg_holds_the_product_only(tmp_path: Path) -> None:
    built = subprocess.run(
        ["scrapyd-deploy", "--build-egg", str(tmp_path / "ingest.egg")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    names = zipfile.ZipFile(tmp_path / "ingest.egg").namelist()
    assert "ingest/ratelimit/backends/bucket.lua" in names
    assert "ingest/schemas/object.schema.json" in names
    assert not [name for name in names if name.startswith(("mockapi", "tests"))]


def test_the_check_fails_from_the_command_line_on_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""Root."""\n')
    (package / "a.py").write_text('"""A."""\nfrom pkg import b\n')
    (package / "b.py").write_text('"""B."""\nfrom pkg import a\n')
    script = REPO_ROOT / "scripts" / "check_structure.py"
    done = subprocess.run(
        [sys.executable, script, package], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr == "check_structure: import cycle: pkg.a <-> pkg.b\n"
