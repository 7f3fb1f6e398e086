#!/usr/bin/env bash
# The two README commands.
#   ./medconcept.sh run    set up (first time) and run the whole pipeline on the embedded sample
#   ./medconcept.sh test   set up (first time) and run the test suite
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
source "${MEDCONCEPT_VENV:-$ROOT/.venv}/bin/activate"
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false

case "${1:-}" in
  run)
    shift
    python -m flows.with_prefect dvc repro "$@"
    dvc status
    ;;
  test)
    shift
    # two workers, one test file each (tests/conftest.py puts the longest files first)
    python -m pytest -q -n "${MEDCONCEPT_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
    ;;
  *)
    echo "usage: $0 run|test [extra args]" >&2
    exit 2
    ;;
esac
