"""The engine against the reference from PNG files on disk (the issue's measurement).

A 30-frame 8-bit PNG plate, 96x128, dilations 1 10 25, seed 1, no refinement, a tiny random
checkpoint, `--reference` settings in fp32 on the CPU. The engine reads the files through the
plate reader; the reference side reads them as the reference does (uint8 / 255). Prints the
largest difference of the model input, the latents and the final map.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/file_parity_bench.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rollingdepth_core.config import preset_config
from rollingdepth_core.method import estimate_depth
from rollingdepth_core.model import DepthModel
from rollingdepth_core.plate import open_plate
from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import sample_frame
from tests.core.reference_impl import reference_run

N, HEIGHT, WIDTH, RES, DILATIONS, SEED = 30, 96, 128, 128, (1, 10, 25), 1


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(N):
            rgb = (sample_frame(i, N, HEIGHT, WIDTH) * 255 + 0.5).astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"plate.{1001 + i:04d}.png")
        theirs = [
            np.asarray(Image.open(p).convert("RGB")).astype(np.float32) / np.float32(255)
            for p in sorted(folder.glob("plate.*.png"))
        ]
        with open_plate(folder / "plate.####.png") as plate:
            ours = [rgb for _, rgb in plate.frames()]
        checkpoint = make_random_checkpoint(folder / "tiny", size="tiny")
        model = DepthModel.from_pretrained(str(checkpoint), "cpu", "fp32", reference=True)
        size = (HEIGHT, WIDTH)
        inputs = [torch.cat([model.preprocess(f, size) for f in fs]) for fs in (ours, theirs)]
        latents = [model.encode(x) for x in inputs]
        config = preset_config(
            "paper", cap_dilation=True, dilations=DILATIONS, processing_res=RES, dtype="fp32",
            seed=SEED, aligner="adam", refine_steps=0, batch_size=1, vae_batch_size=4,
        )  # fmt: skip
        depth = estimate_depth(model, ours, config).to_array()
        expected = reference_run(model.components, theirs, list(DILATIONS), 3, RES, SEED, 0)
    frames = max(np.abs(a - b).max() for a, b in zip(ours, theirs, strict=True))
    print(f"frames:   max |ours - reference| = {frames:.3g}")
    print(f"model in: max |ours - reference| = {(inputs[0] - inputs[1]).abs().max():.3g}")
    print(f"latents:  max |ours - reference| = {(latents[0] - latents[1]).abs().max():.3g}")
    print(f"final map: max |ours - reference| = {np.abs(depth - expected).max():.3g}")


if __name__ == "__main__":
    main()
