"""Cut detection at plate resolution: accuracy and time per frame against the decode it rides on.

The edit of the tests (three unrelated moving shots) is encoded as h264 at ``--size`` and decoded
through `open_plate`; decode time and `CutDetector.push` time are taken per frame in the same
loop, so their ratio survives a noisy machine. A second part scores a fine-grain texture panning
2 pixels a frame (no cut) with the frame shrunk by area averaging (what `CutDetector` does) and
by PySceneDetect's own bilinear shrink: the in-shot score is the false-cut risk.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cuts_bench.py --size 1920x1080 --shots 16 16 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from rollingdepth_core.cuts import CUT_METHODS, DEFAULT_CUT_METHOD, DETECTION_WIDTH, CutDetector
from rollingdepth_core.plate import open_plate
from tests.core.test_cuts import write_edit


def detection_timing(width: int, height: int, shots: list[int], method: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_edit(Path(folder) / "edit.mp4", shots, height, width)
        detector = CutDetector(method)
        decode_s, detect_s = [], []
        with open_plate(path) as plate:
            frames = plate.frames()
            while True:
                start = time.perf_counter()
                item = next(frames, None)
                decode_s.append(time.perf_counter() - start)
                if item is None:
                    break
                start = time.perf_counter()
                detector.push(item[1])
                detect_s.append(time.perf_counter() - start)
        cuts = detector.finish()
    expected = [int(c) for c in np.cumsum(shots)[:-1]]
    decode, detect = np.median(decode_s[1:-1]), np.median(detect_s[1:])
    print(f"{width}x{height}, shots {shots}, {method}: cuts {cuts} (expected {expected})")
    print(
        f"  per frame (median): decode {decode * 1e3:.1f} ms, detect {detect * 1e3:.1f} ms "
        f"({detect / decode:.2f}x decode); cv2 threads {cv2.getNumThreads()}"
    )


def aliasing(width: int, height: int, n_frames: int = 12) -> None:
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector

    rng = np.random.default_rng(0)
    grain = cv2.GaussianBlur(rng.random((height, width + 2 * n_frames), np.float32), (0, 0), 1.5)
    grain = (grain - grain.mean()) / grain.std()
    size = (DETECTION_WIDTH, round(height * DETECTION_WIDTH / width))
    for name, interpolation in (("area", cv2.INTER_AREA), ("bilinear", cv2.INTER_LINEAR)):
        detector, scores = ContentDetector(), []
        for index in range(n_frames):
            grey = np.clip(0.5 + 0.2 * grain[:, 2 * index : 2 * index + width], 0, 1)
            rgb = cv2.resize(
                np.stack([grey * 0.8, grey, grey * 0.6], -1), size, interpolation=interpolation
            )
            bgr = np.ascontiguousarray((rgb * 255 + 0.5).astype(np.uint8)[..., ::-1])
            detector.process_frame(FrameTimecode(index, fps=Fraction(24)), bgr)
            scores.append(detector._frame_score)  # the library keeps the last score private
        print(
            f"  fine grain panning, shrunk by {name}: in-shot score max {max(scores[1:]):.1f} "
            f"(content threshold 27)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT")
    parser.add_argument("--shots", type=int, nargs="+", default=[16, 16, 16])
    parser.add_argument("--method", default=DEFAULT_CUT_METHOD, choices=list(CUT_METHODS))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    detection_timing(width, height, args.shots, args.method)
    aliasing(width, height)


if __name__ == "__main__":
    main()
