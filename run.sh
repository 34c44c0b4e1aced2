#!/usr/bin/env bash
# Start the jobd daemon in the foreground on the bundled example config, with
# the default SQLite store. Creates ./.venv and installs jobd on first use.
#   ./run.sh                 # Ctrl-C (SIGINT) stops it gracefully
#   ./run.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv
exec .venv/bin/jobd --config "${JOBD_CONFIG:-contrib/examples/jobd.toml}" run "$@"
