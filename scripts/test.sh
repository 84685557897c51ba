#!/usr/bin/env bash
# Install everything the test suite needs (engine build included) and run it.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests run; a missing one fails its tests, so install it here
# (CI may be a fresh Debian machine). One apt-get step for all of them, skipped
# when every command is already present. Entries are command:debian-package.
system_tools=(
    docker-compose:docker-compose   # tests/test_deployment.py: `docker-compose config -q`
    shellcheck:shellcheck           # tests/test_deployment.py: the shell scripts
    curl:curl                       # start.sh / kato-manager.sh talk to the service with it
    redis-server:redis-server       # tests/servers/redis_server.py: the server-storage tests
)
missing=()
for entry in "${system_tools[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
exec python3 -m pytest "$@"
