"""SHA-256 of the EXRs every way of running the method writes, on one fixed plate and checkpoint.

Runs (a) a default CLI run, (b) ``run --cache``, (c) ``infer --chunk 1/2, 2/2`` + ``finalize``,
(d) ``--executor ray``, (e) ``--reference`` and (f) a panel export (the tuning session), and
prints one digest per path (over the files' names and bytes) plus the per-file digests as JSON.
A redesign of the run path keeps (a)-(e) byte-identical: run this before and after and compare.

    python benchmarks/output_identity.py --out /tmp/identity.json [--skip-ray] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# The EXRs' DateTime is the time of writing unless SOURCE_DATE_EPOCH pins it
# (output.export_datetime): pinned for every path below, subprocesses included.
SOURCE_DATE_EPOCH = "1700000000"
SETTINGS = ["--res", "64", "--dilations", "1", "3", "--seed", "3", "--device", "cpu"]


def make_plate(folder: Path, n_frames: int = 12) -> Path:
    import OpenImageIO as oiio

    from rollingdepth_core.sample import sample_frame

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_frames):
        rgb = (sample_frame(i, n_frames, 72, 96) * 255 + 0.5).astype(np.uint8)
        path = folder / f"plate.{1001 + i:04d}.png"
        out = oiio.ImageOutput.create(str(path))
        out.open(str(path), oiio.ImageSpec(96, 72, 3, "uint8"))
        out.write_image(rgb)
        out.close()
    return folder / "plate.####.png"


def digest(folder: Path) -> dict:
    files = sorted(folder.glob("*.exr"))
    total = hashlib.sha256()
    per_file = {}
    for path in files:
        data = path.read_bytes()
        per_file[path.name] = hashlib.sha256(data).hexdigest()
        total.update(path.name.encode())
        total.update(data)
    return {"sha256": total.hexdigest(), "files": per_file}


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "rollingdepth_core.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")


def panel_export(plate: str, checkpoint: Path, out: Path) -> None:
    from rollingdepth_core.config import OutputConfig, preset_config
    from rollingdepth_core.model import DepthModel as Model
    from rollingdepth_core.plate import open_plate
    from rollingdepth_core.session import DepthSession

    config = preset_config(
        "fast", processing_res=64, dilations=(1, 3), seed=3, dtype="fp32", vae_batch_size=4
    )
    model = Model.from_pretrained(str(checkpoint), device="cpu", dtype="fp32")
    session = DepthSession(model, open_plate(plate))
    prediction = session.run(config)
    session.export(prediction, str(out / "depth.####.exr"), OutputConfig(), preset="fast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the digests to this JSON file")
    parser.add_argument("--skip-ray", action="store_true", help="leave out (d)")
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "rollingdepth-identity"),
        help="work folder (emptied first); the paths land in the EXR headers, so keep it fixed",
    )
    args = parser.parse_args()
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH

    from rollingdepth_core.random_checkpoint import make_random_checkpoint

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    checkpoint = make_random_checkpoint(work / "ckpt", size="tiny", seed=0)
    plate = str(make_plate(work / "plate"))
    common = [plate, "--checkpoint", str(checkpoint), *SETTINGS]
    results: dict[str, dict] = {}

    cli("run", *common, "-o", str(work / "a"))
    results["a_run"] = digest(work / "a")
    cli("run", *common, "-o", str(work / "b"), "--cache", str(work / "cache_b"))
    results["b_cache"] = digest(work / "b")
    for k in ("1/2", "2/2"):
        cli("infer", *common, "--cache", str(work / "cache_c"), "--chunk", k)
    cli("finalize", *common, "-o", str(work / "c"), "--cache", str(work / "cache_c"))
    results["c_chunks"] = digest(work / "c")
    if not args.skip_ray:
        cli(
            "run",
            *common,
            "-o",
            str(work / "d"),
            "--cache",
            str(work / "cache_d"),
            "--executor",
            "ray",
        )
        results["d_ray"] = digest(work / "d")
    cli("run", *common, "-o", str(work / "e"), "--reference", "--dtype", "fp32")
    results["e_reference"] = digest(work / "e")
    panel_export(plate, checkpoint, work / "f")
    results["f_panel"] = digest(work / "f")

    for name, result in results.items():
        print(f"{name:12s} {result['sha256']}  ({len(result['files'])} files)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
