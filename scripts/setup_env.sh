#!/usr/bin/env bash
# Creates (or updates) the engine's environment in .venv/ at the repository root.
# Idempotent: a second run only checks. Installs missing system libraries with apt-get when root.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
SYSTEM_LIBS="libegl1 libgl1 libfontconfig1 libxkbcommon0 libglib2.0-0 libdbus-1-3"
# Qt's xcb platform plugin (the panel on a Linux desktop): what libqxcb.so and
# libQt6XcbQpa.so.6 of PySide6 6.12 link (ldd); a fresh Debian 12 lacked icccm4 and keysyms1.
SYSTEM_LIBS="$SYSTEM_LIBS libx11-6 libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0
    libxcb-keysyms1 libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0
    libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0"
# A virtual X display for tests/qt/test_real_display.py (xvfb-run needs xauth).
SYSTEM_LIBS="$SYSTEM_LIBS xvfb xauth"

ensure_system_libs() {
    command -v dpkg >/dev/null 2>&1 || return 0
    local missing=""
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing system libraries:$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "setup: warning: missing system libraries:$missing (install them with apt-get)" >&2
    fi
}
ensure_system_libs $SYSTEM_LIBS

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch (pinned, CPU build where no GPU)"
    .venv/bin/pip install -q torch==2.13.0
fi
stamp=.venv/.rollingdepth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    if .venv/bin/pip show -q scenedetect >/dev/null 2>&1; then
        # An environment made before the engine depended on scenedetect-headless holds the
        # registry's `scenedetect` (installed without its GUI OpenCV): both own the same module
        # files, so both go and the headless build comes back with the engine below.
        .venv/bin/pip uninstall -q -y scenedetect scenedetect-headless
    fi
    echo "setup: installing the engine and its dependencies"
    .venv/bin/pip install -q -c scripts/constraints.txt -e ".[dev,panel]"
    touch "$stamp"
fi
