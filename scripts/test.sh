#!/usr/bin/env bash
# The test suite: sets up both environments (engine .venv, Blender's .venv-blender), then runs
# the engine and panel tests in .venv (pytest-xdist, one worker per core) and, at the same time,
# the add-on tests under real bpy in .venv-blender (their report follows the engine's).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_blender_env.sh
export QT_QPA_PLATFORM=offscreen
# The slowest tests are listed at the end of each report (--durations), to see where the time goes.
# One torch thread per test process: the suite runs several at once, and torch's OpenMP threads
# spin on an oversubscribed machine (a 2-core run took 7.6 min with 2 threads, 5.6 with 1).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
.venv/bin/ruff check . && .venv/bin/ruff format --check . || status=1
blender_log=$(mktemp)
trap 'rm -f "$blender_log"' EXIT
ROLLINGDEPTH_ENGINE_PYTHON="$PWD/.venv/bin/python" \
    .venv-blender/bin/python -m pytest tests/blender -q -p no:cacheprovider --durations=10 "$@" \
    >"$blender_log" 2>&1 &
blender=$!
# --dist loadscope: a module's tests run on one worker, so its module fixtures (a plate, the
# local run Ray must reproduce, the Ray cluster) are made once (xdist_group marks do nothing
# with pytest 9.2: pytest-xdist issue 1386); modules go out longest first (tests/conftest.py).
.venv/bin/python -m pytest tests/core tests/qt -q -p no:cacheprovider -n auto --dist loadscope \
    --no-loadscope-reorder --durations=15 \
    "$@" || status=1
wait "$blender" || status=1
echo "--- tests/blender (bpy)"
cat "$blender_log"
exit $status
