#!/usr/bin/env bash
# Installs what inferq needs on a fresh Debian machine with Python 3.11:
# redis-server (apt-get, only when missing) and the Python packages in ./.venv.
# Idempotent: a second run installs nothing unless pyproject.toml changed.
# --with-browser: also Debian's chromium and chromium-driver, and Node.js when no `node`
# is on the PATH (only the test command asks for them: the Flower browser test and the
# Node.js example's test; the demo needs neither).
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=""
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    *) echo "bootstrap: unknown option $arg (known: --with-browser)" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python >= 3.11 is required" >&2; exit 1; }

if ! command -v redis-server >/dev/null; then
  echo "bootstrap: installing redis-server (apt-get)"
  apt_install redis-server
  # Debian's package starts a system service; inferq never needs it (it starts its own).
fi

# Debian's own builds, so Selenium never downloads a browser or a driver of its own.
if [ -n "$with_browser" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  echo "bootstrap: installing chromium and chromium-driver (apt-get, for the browser test)"
  apt_install chromium chromium-driver
fi
# Node.js >= 18 has fetch built in, all examples/node/infer.mjs uses (Debian 12: 18).
if [ -n "$with_browser" ] && ! command -v node >/dev/null 2>&1; then
  echo "bootstrap: installing nodejs (apt-get, for the Node.js example's test)"
  apt_install nodejs
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    echo "bootstrap: installing python3-venv (apt-get)"
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi

stamp=.venv/.inferq-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv (first time: a few minutes)"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -e ".[cli,worker,tf,flower,bench,gateway,dev]"; } >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "bootstrap: pip install failed; full log in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
