"""Fixtures that start real processes (see tests/harness.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import NatsServer, Suite, running_suite
from tests.testimages import Images, Registry
from tests.testimages import build as build_testimages

POSTGRES_ENV = "BERTH_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def nats() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


# Tests sharing one suite make and drop unreferenced blobs and snapshots all the
# time, as ctr does; a background collection would race them. Garbage collection
# is tested in suites of its own.
QUIET_GC = '[plugins."io.containerd.gc.v1.scheduler"]\nschedule_delay = "1h"\ninterval = "1h"\n'


@pytest.fixture(scope="session")
def suite() -> Iterator[Suite]:
    """One berth suite shared by tests that do not break it."""
    with running_suite(config=QUIET_GC) as s:
        yield s


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(f"PostgreSQL tests skipped: set {POSTGRES_ENV} to a server URL")
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError as e:
        pytest.skip(f"PostgreSQL tests skipped: {POSTGRES_ENV}={url} is unreachable: {e}")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server_url).set(drivername="postgresql+psycopg")
    name = f"berth_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def fresh_suite() -> Iterator[Suite]:
    """A berth suite of the test's own, for tests that kill or restart its parts."""
    with running_suite() as s:
        yield s


@pytest.fixture(scope="session")
def testimages() -> Images:
    """The shared OCI test images without ``big`` (see tests/testimages.py), built once."""
    return build_testimages(no_big=True)


@pytest.fixture(scope="session")
def testimages_big() -> Images:
    """The test images with ``big`` (83 MB gzip): for benchmarks and slow tests only."""
    return build_testimages(no_big=False)


@pytest.fixture(scope="session")
def registry(testimages: Images) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 holding the non-big images as
    ``registry.ref(name)`` = ``127.0.0.1:PORT/testimages/<name>:latest``."""
    with Registry(testimages) as r:
        yield r
