#!/usr/bin/env bash
# The main job: set up, generate a small sample plate, estimate its depth with the default
# checkpoint and write an EXR sequence plus a preview to out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
mkdir -p out/sample
.venv/bin/python -c "from rollingdepth_core.sample import write_sample_video as w; w('out/sample/plate.mp4', n_frames=48)"
exec .venv/bin/rollingdepth run out/sample/plate.mp4 -o out/sample/depth --preview "$@"
