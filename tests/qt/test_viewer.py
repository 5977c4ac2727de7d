import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from qt_panel.viewer import COLOUR_BAR_GAP, MARKER_RADIUS, VIEW_MODES, DepthViewer


@pytest.fixture
def viewer(qtbot):
    view = DepthViewer()
    qtbot.addWidget(view)
    view.resize(400, 200)
    rgb = np.zeros((50, 100, 3), np.float32)
    rgb[:, :, 0] = np.linspace(0, 1, 100)[None, :]
    depth = np.tile(np.linspace(0, 1, 64, dtype=np.float32)[None, :], (32, 1))  # half size
    view.set_rgb(rgb)
    view.set_depth(depth, depth * 10, "depth")
    view.show()
    qtbot.waitExposed(view)
    return view


def image_variance(widget) -> float:
    image = widget.grab().toImage()
    pixels = np.array(
        [
            image.pixelColor(x, y).value()
            for x in range(0, image.width(), 7)
            for y in range(0, image.height(), 7)
        ]
    )
    return float(pixels.std())


def test_every_mode_draws_something(viewer):
    for mode in VIEW_MODES:
        viewer.set_mode(mode)
        assert image_variance(viewer) > 10, mode
    with pytest.raises(ValueError, match="mode"):
        viewer.set_mode("anaglyph")


def test_readout_maps_screen_to_plate_and_depth(viewer):
    # fit: a 100x50 plate in 400x200 is scaled 4x and fills the widget
    viewer.set_mode("rgb")
    assert viewer.image_position(QPointF(200, 100)) == ("rgb", 50.0, 25.0)
    text = viewer.describe(QPointF(398, 100))
    assert "x 99  y 25" in text and "RGB 1.000 0.000 0.000" in text
    # the depth map is at half size: plate x 99 reads depth column 63 (value 10)
    assert "depth 10 (depth)" in text
    assert viewer.image_position(QPointF(-5, 100)) is None


def test_side_by_side_puts_depth_on_the_right(viewer):
    viewer.set_mode("side")  # 200x50 canvas in 400x200: scale 2, centred vertically
    which, x, y = viewer.image_position(QPointF(300, 100))
    assert which == "depth" and x == pytest.approx(50) and y == pytest.approx(25)
    assert viewer.image_position(QPointF(100, 100))[0] == "rgb"


def test_wipe_is_dragged_and_splits_the_readout(qtbot, viewer):
    viewer.set_mode("wipe")
    assert viewer.image_position(QPointF(150, 100))[0] == "rgb"
    assert viewer.image_position(QPointF(250, 100))[0] == "depth"
    qtbot.mousePress(viewer, Qt.MouseButton.LeftButton, pos=QPoint(200, 100))
    qtbot.mouseMove(viewer, QPoint(100, 100))
    qtbot.mouseRelease(viewer, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    assert viewer.wipe == pytest.approx(0.25, abs=0.01)
    assert viewer.image_position(QPointF(150, 100))[0] == "depth"


def test_zoom_keeps_the_point_under_the_cursor_and_fit_resets(viewer):
    viewer.set_mode("rgb")
    before = viewer.image_position(QPointF(120, 60))
    viewer.zoom_at(QPointF(120, 60), 16.0)
    after = viewer.image_position(QPointF(120, 60))
    assert after[1] == pytest.approx(before[1]) and after[2] == pytest.approx(before[2])
    assert viewer.image_position(QPointF(0, 0))[1] > 0  # zoomed in: the corner is inside
    viewer.reset_view()
    assert viewer.zoom is None and viewer.image_position(QPointF(0, 0))[1:] == (0.0, 0.0)


def test_pan_by_dragging(qtbot, viewer):
    viewer.set_mode("depth")
    qtbot.mousePress(viewer, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(viewer, QPoint(140, 120))
    qtbot.mouseRelease(viewer, Qt.MouseButton.LeftButton, pos=QPoint(140, 120))
    assert (viewer.pan.x(), viewer.pan.y()) == (40, 20)


def test_empty_viewer_says_what_to_do(qtbot):
    view = DepthViewer()
    qtbot.addWidget(view)
    view.resize(300, 150)
    assert view.describe(QPointF(10, 10)) == ""
    assert "Open a plate" in view.placeholder
    assert image_variance(view) > 1  # the hint text is drawn


def test_depth_views_have_a_colour_bar_with_values(qtbot, viewer, screenshot_dir):
    viewer.resize(600, 300)
    viewer.set_colormap("gray")
    values = np.tile(np.linspace(-0.8, 1.0, 64, dtype=np.float32)[None, :], (32, 1))
    viewer.set_depth((values + 0.8) / 1.8, values, "inverse", legend=(-0.8, 1.0))
    viewer.set_mode("depth")
    assert viewer.legend_labels == ("near 1", "far -0.8")
    # inverse values below 0 get a note that they are relative, not behind the camera
    assert "below 0" in viewer.legend_note
    image = viewer.grab().toImage()
    # the bar: a vertical gray ramp right of the image, bright (near) at the top
    bar = viewer.colour_bar_rect()
    x = int(bar.center().x())
    column = [image.pixelColor(x, y).value() for y in range(int(bar.top()), int(bar.bottom()))]
    assert column[1] > 230 and column[-2] < 25
    assert len(set(column)) > 20
    viewer.grab().save(str(screenshot_dir / "viewer_colour_bar.png"))

    viewer.set_depth((values + 0.8) / 1.8, values + 1.0, "inverse", legend=(0.2, 2.0))
    assert viewer.legend_note == ""  # nothing to explain
    viewer.set_depth(None)
    assert viewer.legend_labels is None
    assert viewer.colour_bar_width() == 0  # no bar: the image has the whole width


def test_the_colour_bar_has_ticks_beside_the_image(qtbot, viewer):
    """The bar used to say only "near 1 / far -1" and covered the depth's top-right corner
    (and the anchor markers there)."""
    viewer.resize(600, 300)
    values = np.tile(np.linspace(-1.0, 1.0, 64, dtype=np.float32)[None, :], (32, 1))
    viewer.set_depth((values + 1) / 2, values, "inverse", legend=(-1.0, 1.0))
    viewer.set_markers([{"x": 99.0, "y": 0.5, "kind": "good", "text": "corner"}])
    for mode in ("depth", "side", "wipe"):
        viewer.set_mode(mode)
        image = viewer._canvas_rect()
        column = viewer.width() - viewer.colour_bar_width()  # the bar's texts start here
        assert viewer.colour_bar_width() > 40
        assert image.right() <= column + 0.5 and viewer.colour_bar_rect().left() > column, mode
        for point, _marker in viewer.marker_points():
            assert point.x() + MARKER_RADIUS + 1 < column + COLOUR_BAR_GAP, mode
    ticks = viewer.legend_ticks
    assert [text for _, text in ticks] == ["-1.0", "-0.5", "0.0", "0.5", "1.0"]
    np.testing.assert_allclose([p for p, _ in ticks], [0, 0.25, 0.5, 0.75, 1], atol=1e-6)
    viewer.set_mode("rgb")
    assert viewer.colour_bar_width() == 0  # the plate alone has no bar


def test_scene_depth_ticks_follow_the_non_linear_scale(qtbot, viewer):
    """Anchored: the bar gives Z in scene units; 1/Z is linear in the colour, Z is not."""
    inverse_z = np.linspace(1 / 40, 1 / 2, 257)  # far 40 m .. near 2 m
    viewer.set_mode("depth")
    depth = np.tile(np.linspace(0, 1, 64, dtype=np.float32)[None, :], (32, 1))
    viewer.set_depth(depth, depth, "depth", legend=1 / inverse_z, legend_title="Z (m)")
    assert viewer.legend_labels == ("near 2", "far 40")
    ticks = dict((text, p) for p, text in viewer.legend_ticks)
    assert set(ticks) == {"10", "20", "30", "40"}
    # Z = 10 where 1/Z = 0.1: (0.1 - 1/40) / (1/2 - 1/40) of the way to near
    assert ticks["10"] == pytest.approx((0.1 - 1 / 40) / (0.5 - 1 / 40), abs=2e-3)
    assert ticks["40"] == pytest.approx(0.0, abs=1e-6)


def test_wipe_without_depth_says_so_in_full(qtbot, viewer):
    """The wipe cut "No depth yet: press Run" to "t: press Run": the text was centred on
    the whole image and the plate's half was drawn over it."""
    viewer.set_depth(None)
    viewer.set_mode("wipe")
    viewer.wipe = 0.5
    rect = viewer._canvas_rect()
    split = rect.left() + viewer.wipe * rect.width()
    image = viewer.grab().toImage()
    # the placeholder's text is light grey on the dark fill; it must be right of the wipe
    # the line through the middle (the caption's white text is at the top)
    line = viewer.fontMetrics().height()
    middle = int(rect.center().y())
    light = [
        x
        for x in range(int(split) + 3, int(rect.right()))
        for y in range(middle - line, middle + line)
        if image.pixelColor(x, y).value() > 150
    ]
    assert light, "no placeholder text right of the wipe"
    text_width = viewer.fontMetrics().horizontalAdvance("No depth yet: press Run")
    assert rect.right() - split >= text_width  # it fits there whole at this size
    assert max(light) - min(light) >= 0.8 * text_width  # and is drawn whole, not cut


def test_zoom_is_read_out(qtbot, viewer):
    seen = []
    viewer.zoom_changed.connect(lambda scale, fitted: seen.append((scale, fitted)))
    viewer.reset_view()
    assert viewer.zoom_text.endswith("% (fit)") and seen[-1][1] is True
    viewer.set_one_to_one()
    assert viewer.zoom_text == "100 %" and seen[-1] == (1.0, False)
    viewer.zoom_at(QPointF(100, 100), 2.5)
    assert viewer.zoom_text == "250 %"
    viewer.zoom = 4.0  # set directly (scripts, tests): the readout follows too
    assert viewer.zoom_text == "400 %" and seen[-1] == (4.0, False)
