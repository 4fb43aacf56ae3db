#!/usr/bin/env bash
# Run berth's whole test suite as root: lint, types, generated-code freshness,
# unit and integration tests against real processes (nats-server, berth's
# services, nginx, runc, a registry, Debian's ctr). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: run as root (tests use runc, mounts and namespaces)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "test.sh: run scripts/install.sh first" >&2
    exit 1
fi

.venv/bin/ruff check .
.venv/bin/mypy
# PostgreSQL tests use this server when it answers, and say so loudly when it does not.
export BERTH_TEST_POSTGRES_URL="${BERTH_TEST_POSTGRES_URL-postgresql://postgres@127.0.0.1:5432/test}"
exec .venv/bin/python -m pytest "$@"
