"""The panel shows the current plate frame's timecode (a real window, a real timecoded movie)."""

from fractions import Fraction

import av
import numpy as np


def write_timecoded_movie(path, n_frames: int, rate: Fraction, timecode: str):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.metadata["timecode"] = timecode
        for i in range(n_frames):
            pixels = np.full((48, 64, 3), 20 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_scrubber_shows_the_frames_timecode(qtbot, window, tmp_path):
    movie = write_timecoded_movie(tmp_path / "tc.mov", 6, Fraction(30000, 1001), "00:00:59;28")
    assert window.open_plate(str(movie))
    label = window.scrubber.timecode_label
    assert label.isVisibleTo(window) and label.text() == "00:00:59;28"
    window.scrubber.step(2)  # drop-frame: 00:01:00;00 and ;01 do not exist
    assert window.scrubber.frame_number == 2 and label.text() == "00:01:00;02"

    plain = tmp_path / "plain.mov"
    with av.open(str(plain), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert window.open_plate(str(plain))
    assert not label.isVisibleTo(window)  # no timecode, no stale one
