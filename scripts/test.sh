#!/usr/bin/env bash
# Install everything the test suite needs (engine build included) and run it.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
exec python3 -m pytest "$@"
