#!/usr/bin/env bash
# The main job: local Redis (the configured one if it answers, else a private one),
# a worker, Flower, the held-out digits through digits fp32 and int8, a latency report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/inferq demo "$@"
