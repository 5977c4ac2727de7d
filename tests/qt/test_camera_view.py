"""The shot's camera in the panel: P and N view modes (false colour with a legend) and an
export carrying P and N through the same camera request a run builds."""

import numpy as np

from qt_panel.geometry_view import GEOMETRY_NEEDS_CAMERA, GEOMETRY_NEEDS_UNITS, geometry_view
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.exr import read_exr

from .test_main_window import RUN_TIMEOUT_MS, not_blank, run_and_wait


def write_chan(path, numbers):
    # a camera 5 units back, turning a little per frame, vertical field of view 40 degrees
    path.write_text("".join(f"{n} 0 1 5 -5 {n} 0 40\n" for n in numbers))
    return str(path)


def test_p_and_n_views_and_export(qtbot, window, clip, tmp_path, screenshot_dir):
    window.settings_panel.set_values(depth_mode="depth", near=2.0, far=20.0)
    window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    viewer = window.viewer
    window.mode_actions["position"].trigger()
    assert viewer.mode == "position"
    assert viewer._geometry is None and viewer._geometry_message == GEOMETRY_NEEDS_CAMERA
    assert viewer.geometry_legend == []

    info = window.controller.info
    chan = write_chan(tmp_path / "shot.chan", info.frame_numbers)
    window.camera_panel.set_file(chan)
    window.scrubber.set_index(3)
    qtbot.waitUntil(lambda: viewer._geometry is not None, timeout=RUN_TIMEOUT_MS)
    # the colours are the shown depth through this frame's camera
    output = window.settings_panel.output_config()
    values = window.controller.depth(3, output, window.controller.upsampled_depth(3))[1]
    track = load_camera(CameraRequest(file=chan), info.frame_numbers, (info.height, info.width))
    expected = geometry_view(values, track.at(info.frame_numbers[3]), "world")
    np.testing.assert_array_equal(viewer._geometry.position, expected.position)
    np.testing.assert_array_equal(viewer._geometry.normals, expected.normals)
    legend = viewer.geometry_legend
    assert legend[0].startswith("P (world)") and legend[3].startswith("B = Z")
    lo, hi = expected.ranges[2]
    assert f"{lo:.4g}" in legend[3] and f"{hi:.4g}" in legend[3]
    assert not_blank(viewer)
    assert viewer.colour_bar_width() == 0  # the depth's colour bar is not P's legend
    viewer.grab().save(str(screenshot_dir / "view_position.png"))
    window.mode_actions["normals"].trigger()
    assert viewer.geometry_legend[0].startswith("N (world)")
    viewer.grab().save(str(screenshot_dir / "view_normals.png"))

    # depth that is not in scene units has no P or N, and the view says why
    window.settings_panel.set_values(depth_mode="normalized")
    window.show_frame(3)
    assert viewer._geometry is None and viewer._geometry_message == GEOMETRY_NEEDS_UNITS
    window.settings_panel.set_values(depth_mode="depth")

    window.camera_panel.normals_check.setChecked(False)
    dialog = window.open_export_dialog()
    dialog.pattern_edit.setText(str(tmp_path / "out" / "depth.####.exr"))
    with qtbot.waitSignal(window.controller.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        dialog.export_button.click()
    channels, header = read_exr(done.args[0][3])
    assert set(channels) == {"Z", "P.X", "P.Y", "P.Z"}
    assert header["rollingdepth/camera.file"] == chan
    assert header["rollingdepth/passes"] == "Z P"
