#!/bin/sh
# Makes sure this machine can build the project's virtualenv: Python >= 3.11 with venv.
# Everything else (the Python packages, the database and broker servers) is installed
# by `make` and `ticketflow stack install` from here on.
set -eu

need=""
command -v python3 >/dev/null 2>&1 || need="python3"
if [ -z "$need" ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need="python3-venv"
fi
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: $need is missing; install it (Debian: apt-get install $need python3-pip)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "bootstrap: TicketFlow needs Python 3.11 or newer; found $(python3 --version 2>&1)" >&2
    exit 1
}

# The browser tests (tests/browser/) drive Debian's chromium through Playwright for Python with
# the system browser's path (the machines reach no browser download site: never `playwright install`).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
    else
        echo "bootstrap: chromium is missing (the browser tests need it); install it (Debian: apt-get install chromium)" >&2
    fi
fi
