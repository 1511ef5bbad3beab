"""Fixtures every tier shares."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgserver import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway Postgres server for the session; each test takes a database of its own."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
