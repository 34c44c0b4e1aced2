#!/usr/bin/env bash
# Run the whole test suite: lint, format check, then pytest on SQLite and PostgreSQL.
# Creates ./.venv and installs jobd with its test extra on first use.
#   ./test.sh                # everything
#   ./test.sh -k cron -x     # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv test
.venv/bin/ruff check jobd tests bench
.venv/bin/ruff format --check jobd tests bench
set +e
# Most tests wait on real daemons and timers, not the CPU: four workers finish
# the suite in about half the time even on two cores.
.venv/bin/python -m pytest -n "${JOBD_TEST_WORKERS:-4}" "$@"
status=$?
set -e
# pytest exits 5 when it collected no test at all: say so instead of passing silently.
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit "$status"
