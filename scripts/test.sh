#!/usr/bin/env bash
# The test suite: sets up both environments (engine .venv, Blender's .venv-blender), then runs
# the engine and panel tests in .venv and the add-on tests under real bpy in .venv-blender.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_blender_env.sh
export QT_QPA_PLATFORM=offscreen
status=0
.venv/bin/ruff check . && .venv/bin/ruff format --check . || status=1
.venv/bin/python -m pytest tests/core tests/qt -q -p no:cacheprovider "$@" || status=1
ROLLINGDEPTH_ENGINE_PYTHON="$PWD/.venv/bin/python" \
    .venv-blender/bin/python -m pytest tests/blender -q -p no:cacheprovider "$@" || status=1
exit $status
