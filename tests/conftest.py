"""Fixtures every tier shares."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgserver import PostgresServer

_OWN_BUILD_CACHE = "_wisp_own_build_cache"  # the config attribute naming the folder this run made


def pytest_configure(config: pytest.Config) -> None:
    """One uv cache for every test server's sandboxed builds (WISP_BUILD_CACHE), as a machine's
    servers would keep theirs in one WISP_HOME: without it each fresh WISP_HOME fetches and
    copies every package of its images again. Made by the controlling process before pytest-xdist
    starts its workers, which inherit the variable: all workers share one cache (uv locks it)."""
    if hasattr(config, "workerinput") or os.environ.get("WISP_BUILD_CACHE") is not None:
        return
    folder = tempfile.mkdtemp(prefix="wisp-test-build-cache-")
    os.chmod(folder, 0o755)  # the build uid enters it
    os.environ["WISP_BUILD_CACHE"] = os.path.join(folder, "uv")
    setattr(config, _OWN_BUILD_CACHE, folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, _OWN_BUILD_CACHE, None)
    if folder is not None:
        del os.environ["WISP_BUILD_CACHE"]
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (`scripts/test` runs two workers), each test file stays on one worker, so
    that its module-scoped servers start once; the Ray cluster tier's files share one worker, so
    that two clusters never run at once."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    root = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        group = "ray-cluster" if (root / "cluster") in path.parents else str(path.relative_to(root))
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A pytest that drops xdist's group suffix (pytest-xdist issue 1386, pytest 9.2) would spread a
    file's tests over both workers, each starting the file's servers and breaking its order: say
    so instead of running."""
    grouping = hasattr(session.config, "workerinput") and getattr(session.config.option, "loadgroup", False)
    if grouping and session.items and not any("@" in item.nodeid for item in session.items):
        raise pytest.UsageError(f"pytest {pytest.__version__} ignores pytest-xdist's xdist_group marks: install "
                                "the pytest pyproject.toml pins (scripts/install), or run with -n 0")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway Postgres server for the session; each test takes a database of its own."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
