"""Holdout mattes in the panel: load one after a run (re-aligned, no model run), see it over
the image, clear it."""

import numpy as np
import OpenImageIO as oiio
from PySide6.QtCore import QPointF

from .conftest import HEIGHT, N_FRAMES, RUN_TIMEOUT_MS, WIDTH
from .test_main_window import run_and_wait


def write_mattes(folder, numbers):
    """Greyscale PNG mattes, left half 1 (held out), right half 0."""
    folder.mkdir(parents=True, exist_ok=True)
    matte = np.zeros((HEIGHT, WIDTH), np.uint8)
    matte[:, : WIDTH // 2] = 255
    for number in numbers:
        out = oiio.ImageOutput.create("png")
        assert out.open(
            str(folder / f"matte.{number}.png"), oiio.ImageSpec(WIDTH, HEIGHT, 1, "uint8")
        )
        # [H,W,1]: OpenImageIO 3.2's write_image reads a 2-D array wrongly (rows garbled)
        assert out.write_image(matte[..., None])
        out.close()
    return folder / f"matte.{numbers[0]}.png"


def realign(qtbot, window, action):
    with qtbot.waitSignal(window.controller.result_changed, timeout=RUN_TIMEOUT_MS):
        action()
    qtbot.waitUntil(lambda: not window.controller.worker.busy, timeout=RUN_TIMEOUT_MS)
    return window.controller.result


def pixel(window, fx, fy):
    """The viewer's grabbed colour at a fraction (fx, fy) of the image's rectangle."""
    viewer = window.viewer
    rect = viewer._canvas_rect()
    point = QPointF(rect.left() + fx * rect.width(), rect.top() + fy * rect.height())
    image = viewer.grab().toImage()
    # the grab is in device pixels: a device pixel ratio above 1 (set by an earlier test or
    # the platform) scales widget coordinates
    return image.pixelColor((point * image.devicePixelRatio()).toPoint())


def test_holdout_matte_realigns_without_the_model(
    qtbot, window, sequence, tmp_path, screenshot_dir
):
    window.open_plate(str(sequence))
    window.mode_actions["rgb"].trigger()
    first = run_and_wait(qtbot, window)
    # measure in the RGB view on one frame (the plate moves from frame to frame)
    window.mode_actions["rgb"].trigger()
    window.scrubber.set_index(0)
    qtbot.wait(200)
    counters = window.controller.session.counters
    predicted, calls, alignments = (
        counters.snippets_predicted,
        counters.predict_calls,
        counters.alignments,
    )

    matte = write_mattes(tmp_path / "mattes", list(range(1001, 1001 + N_FRAMES)))
    job_started = []
    window.controller.job_started.connect(job_started.append)
    held = realign(qtbot, window, lambda: window.controller.load_holdout(matte))
    window.mode_actions["rgb"].trigger()
    window.scrubber.set_index(0)
    qtbot.wait(200)
    assert job_started == ["align"]  # the settings' re-align path, off the GUI thread
    assert counters.snippets_predicted == predicted and counters.predict_calls == calls
    assert counters.alignments == alignments + 1
    assert not all(
        np.allclose(a, b)
        for a, b in zip(first.alignment.scales, held.alignment.scales, strict=True)
    )
    assert window.controller.result_holdout is window.controller.holdout
    assert window.matte_label.text().strip() == "holdout: matte.1001.png (sequence)"
    assert window.settings_panel.hint_label.text() == "up to date"

    # magenta at 40 % over the held-out left half: the same frame and view with the overlay
    # toggled off and on, measured back to back
    def left_pixel():
        qtbot.wait(50)
        return pixel(window, 0.25, 0.5).getRgb()[:3]

    def right_pixel():
        qtbot.wait(50)
        return pixel(window, 0.75, 0.5).getRgb()[:3]

    left, right = left_pixel(), right_pixel()
    window.show_matte_action.trigger()  # the toggle hides it
    left_off, right_off = left_pixel(), right_pixel()
    window.show_matte_action.trigger()
    expected = [0.6 * c + 0.4 * m for c, m in zip(left_off, (255, 0, 255), strict=True)]
    assert np.allclose(left, expected, atol=4), (left, expected)
    assert not np.allclose(left, left_off, atol=8)  # the overlay shows, and the toggle hides it
    assert np.allclose(right, right_off, atol=2), (right, right_off)  # nothing over the rest
    matte = window.controller.matte(0)
    assert (
        matte[:, : matte.shape[1] // 2].min() == 1.0 and matte[:, matte.shape[1] // 2 :].max() == 0
    )

    window.mode_actions["side"].trigger()
    window.scrubber.set_index(6)
    path = screenshot_dir / "qt_panel_holdout.png"
    assert window.grab().save(str(path))

    cleared = realign(qtbot, window, window.clear_holdout_action.trigger)
    assert counters.snippets_predicted == predicted
    for a, b in zip(first.alignment.scales, cleared.alignment.scales, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cleared.depth, first.depth, atol=1e-5)
    assert window.matte_label.text().strip() == "holdout: none"
    assert window.viewer._matte_image is None
    assert not window.clear_holdout_action.isEnabled()


def test_a_matte_that_does_not_fit_says_why(qtbot, window, sequence, tmp_path):
    window.open_plate(str(sequence))
    short = write_mattes(tmp_path / "short", list(range(1001, 1001 + N_FRAMES - 1)))
    assert not window.controller.load_holdout(short)
    box = window.error_box
    assert box is not None and box.windowTitle() == "Cannot use the holdout matte"
    assert "lacks frames 1012" in box.text() and "\n" not in box.text()
    assert str(short) in box.detailedText()
    assert (
        window.controller.holdout is None and window.matte_label.text().strip() == "holdout: none"
    )
