#!/usr/bin/env bash
# Install a redis-server >= 7 for serving/ (tests, demo, benchmarks) unless one is present.
# Source: Debian's `redis-server` package (bookworm: 7.0.15). `make test` runs this first.
# Set LOGRL_REDIS_SERVER to use a server binary installed elsewhere.
set -euo pipefail

recent() {
    local bin=${LOGRL_REDIS_SERVER:-$(command -v redis-server || true)}
    [[ -n "$bin" ]] && "$bin" --version | grep -Eq 'v=([7-9]|[1-9][0-9]+)\.'
}

if recent; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: redis-server >= 7 not found and no apt-get here: install Redis 7 and put" \
         "redis-server on PATH (or set LOGRL_REDIS_SERVER)" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's redis-server package" >&2
if ! $sudo apt-get install -y -q --no-install-recommends redis-server >/dev/null; then
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends redis-server >/dev/null
fi
if ! recent; then
    echo "error: the installed redis-server is older than 7: $(redis-server --version)" >&2
    exit 1
fi
redis-server --version >&2
