#!/usr/bin/env bash
# Create the Blender-as-a-module test environment (.venv-blender) next to the engine's .venv.
#
# bpy pins numpy<2 while the engine needs numpy>=2, so the two never share an environment
# (real users have the same split: Blender's own Python and the engine's Python).
# Safe to run again: it only installs what is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BLENDER_VENV:-$REPO/.venv-blender}"
PYTHON="${PYTHON:-python3.11}"
BPY_VERSION="5.0.1"

# System libraries bpy loads at import time.
LIBS=(libgl1 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6)
missing=()
for lib in "${LIBS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$lib")
    fi
done
if ((${#missing[@]})); then
    echo "Installing system libraries: ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c "import bpy, sys; sys.exit(bpy.app.version_string != '$BPY_VERSION')" \
    >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --upgrade pip
    "$VENV/bin/python" -m pip install "bpy==$BPY_VERSION"
fi
if ! "$VENV/bin/python" -c "import pytest" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install pytest
fi

# The add-on imports the engine's protocol module as blender_addon/protocol.py: copy it in the
# way the build does, so the add-on also runs straight from the source folder.
"$VENV/bin/python" "$REPO/scripts/build_addon.py" --bundle-only

"$VENV/bin/python" -c "import bpy; print('bpy', bpy.app.version_string, 'ready in $VENV')"
