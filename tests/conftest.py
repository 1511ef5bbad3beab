"""Fixtures every tier shares."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from pgserver import PostgresServer


@pytest.fixture(scope="session", autouse=True)
def shared_build_cache() -> Iterator[None]:
    """One uv cache for every test server's sandboxed builds (WISP_BUILD_CACHE), as a machine's
    servers would keep theirs in one WISP_HOME: without it each fresh WISP_HOME fetches and
    copies every package of its images again."""
    if os.environ.get("WISP_BUILD_CACHE") is not None:
        yield
        return
    folder = tempfile.mkdtemp(prefix="wisp-test-build-cache-")
    os.chmod(folder, 0o755)  # the build uid enters it
    os.environ["WISP_BUILD_CACHE"] = os.path.join(folder, "uv")
    try:
        yield
    finally:
        del os.environ["WISP_BUILD_CACHE"]
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway Postgres server for the session; each test takes a database of its own."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
