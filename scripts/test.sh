#!/usr/bin/env bash
# The test command: lint, type-check, then unit and integration tests against a
# private redis-server that the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium + chromium-driver for the Flower browser test (tests/integration/test_flower_browser.py)
bash scripts/bootstrap.sh --with-browser
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a broken test suite here, not a pass" >&2
  exit 1
fi
exit "$rc"
