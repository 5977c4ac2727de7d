"""The image viewer: RGB, depth, side by side or a wipe, with zoom, pan and a value readout."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from rollingdepth_core.preview import colorize

VIEW_MODES = ("rgb", "depth", "side", "wipe", "position", "normals")
VIEW_MODE_LABELS = {
    "rgb": "RGB",
    "depth": "Depth",
    "side": "Side by side",
    "wipe": "Wipe",
    "position": "P",
    "normals": "N",
}
# The P and N views (false colour through the shot's camera): caption, and what an empty one says.
GEOMETRY_CAPTIONS = {"position": "P · position", "normals": "N · normals"}
ZOOM_RANGE = (0.05, 64.0)
# How close (in screen pixels) a press must be to the wipe line to grab it.
WIPE_GRAB_PX = 12
COLOUR_BAR_SIZE = (14, 320)  # width, largest height in screen pixels
# Space between the image area and the colour bar's texts (a marker at the image's edge
# stays clear of them).
COLOUR_BAR_GAP = 8
# Ticks on the colour bar: about this many, at round values.
COLOUR_BAR_TICKS = 5
# Samples of a colour bar's values, from far to near: a non-linear scale (depth, scene Z)
# places its ticks within a pixel at any bar height.
LEGEND_SAMPLES = 257
# Anchor markers: radius and how close (screen pixels) the cursor must be to read one out.
MARKER_RADIUS = 6
MARKER_HOVER_PX = 10
# Marker colours: a file's point before any fit, a used anchor within 5 % / beyond it, and
# one the fit rejected (its residual is past the fit's cutoff).
MARKER_COLORS = {
    "point": QColor(80, 200, 255),
    "good": QColor(90, 220, 110),
    "fair": QColor(250, 200, 60),
    "rejected": QColor(240, 70, 70),
}
GOOD_RESIDUAL = 0.05
# The holdout matte over the image: this colour, this opaque where the matte is 1.
MATTE_COLOR = (255, 0, 255)
MATTE_OPACITY = 0.4
NEGATIVE_INVERSE_NOTE = (
    "inverse depth is relative: values below 0 are just farther, not behind the camera "
    "(normalized gives 0..1, depth gives scene units)"
)


def to_qimage(rgb: np.ndarray) -> QImage:
    """uint8 ``[H,W,3]`` → an RGB888 QImage that owns its pixels."""
    rgb = np.ascontiguousarray(rgb)
    height, width = rgb.shape[:2]
    return QImage(rgb.data, width, height, rgb.strides[0], QImage.Format.Format_RGB888).copy()


class DepthViewer(QWidget):
    """Shows one frame. The image space is the plate's size (side by side: twice as wide).

    Depth maps at the processing size are drawn stretched over the plate's size; the readout
    samples them at the matching position.
    """

    hovered = Signal(str)  # what is under the cursor, or "" when it leaves the image
    mode_changed = Signal(str)
    zoom_changed = Signal(float, bool)  # screen pixels per plate pixel, fitted to the window

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(320, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setAcceptDrops(False)  # the main window takes drops
        self.mode = "rgb"
        self.colormap = "turbo"
        self.wipe = 0.5  # wipe position as a fraction of the image width
        self._zoom: float | None = None  # None = fit to the widget
        self.pan = QPointF(0.0, 0.0)  # image offset in screen pixels from the centred position
        self.placeholder = (
            "Open a plate: File > Open, drop a file here, or pass it on the command line"
        )
        self._rgb: np.ndarray | None = None  # [H,W,3] float32 in [0,1]
        self._rgb_image: QImage | None = None
        self._depth01: np.ndarray | None = None  # [h,w] in [0,1], 1 = nearest
        self._depth_values: np.ndarray | None = None  # [h,w] in the output convention
        self._depth_label = ""
        self._depth_image: QImage | None = None
        self._legend: np.ndarray | None = None  # the bar's values from far (0) to near (1)
        self._legend_title = ""  # what the bar's values are: "inverse", "Z (m)"
        self._bar_image: QImage | None = None
        self._resolution_note = ""  # e.g. "edge 1920x1080": the depth is at plate resolution
        self._scene_depth: np.ndarray | None = None  # [h,w] Z in scene units (anchored)
        self._scene_units = ""
        self.markers: list[dict] = []  # anchors on this frame: x, y, kind, text
        self._matte_image: QImage | None = None  # the holdout matte's overlay, plate-sized
        self._geometry = None  # a .geometry_view.GeometryView of this frame, or None
        self._geometry_images: dict[str, QImage] = {}
        self._geometry_message = ""  # why there is no P/N view
        self._drag: str | None = None  # "pan" | "wipe"
        self._drag_origin = QPointF()
        self._pan_origin = QPointF()

    @property
    def zoom(self) -> float | None:
        """Screen pixels per plate pixel, or None to fit the image to the widget."""
        return self._zoom

    @zoom.setter
    def zoom(self, value: float | None) -> None:
        self._zoom = value
        self.update()
        self._emit_zoom()

    # ---------------------------------------------------------------- content
    def set_rgb(self, rgb: np.ndarray | None) -> None:
        resized = (None if rgb is None else rgb.shape[:2]) != (
            None if self._rgb is None else self._rgb.shape[:2]
        )
        self._rgb = rgb
        self._rgb_image = None if rgb is None else to_qimage(_to_uint8(rgb))
        self.update()
        if resized:
            self._emit_zoom()

    def set_depth(
        self,
        depth01: np.ndarray | None,
        values: np.ndarray | None = None,
        label: str = "",
        legend: tuple[float, float] | np.ndarray | None = None,
        resolution_note: str = "",
        legend_title: str = "",
    ) -> None:
        """``depth01`` colours the map; ``values`` (same shape) is what the readout shows;
        ``legend`` gives the colour bar's values: (far end, near end) of a linear scale, or
        values sampled evenly from the far end (colour 0) to the near end (colour 1);
        ``legend_title`` says what they are (default ``label``); ``resolution_note`` names a
        plate-resolution map ("edge 1920x1080") in the caption."""
        self._resolution_note = resolution_note
        had_bar = self._bar_shown()
        self._depth01 = depth01
        self._depth_values = depth01 if values is None else values
        self._depth_label = label
        self._legend = None
        if depth01 is not None and legend is not None:
            legend = np.asarray(legend, np.float64)
            if legend.shape == (2,):
                legend = np.linspace(legend[0], legend[1], LEGEND_SAMPLES)
            self._legend = legend
        self._legend_title = legend_title or label or "depth"
        self._render_depth()
        if had_bar != self._bar_shown():
            self._emit_zoom()  # the image area changed width

    def set_scene_depth(self, z: np.ndarray | None, units: str = "") -> None:
        """Depth ``Z`` in scene units (``[h,w]``, from an anchor fit) for the readout."""
        self._scene_depth, self._scene_units = z, units

    def set_markers(self, markers: list[dict]) -> None:
        """Anchors to draw on the plate: dicts with ``x``, ``y`` (plate pixels), ``kind``
        (a key of MARKER_COLORS) and ``text`` (the hover readout)."""
        self.markers = list(markers)
        self.update()

    def set_matte(self, matte: np.ndarray | None) -> None:
        """Overlay a holdout matte (``[H,W]`` in 0..1, any size of the plate's aspect) on the
        images, or none."""
        self._matte_image = None if matte is None else matte_overlay(matte)
        self.update()

    def set_geometry(self, view, message: str = "") -> None:
        """This frame's P and N colours (a :class:`.geometry_view.GeometryView`), or None and
        the reason (no camera, depth not in scene units) the P and N views then show."""
        self._geometry = view
        self._geometry_message = message
        self._geometry_images = (
            {}
            if view is None
            else {
                "position": to_qimage(_to_uint8(view.position)),
                "normals": to_qimage(_to_uint8(view.normals)),
            }
        )
        self.update()

    @property
    def geometry_legend(self) -> list[str]:
        """What the P or N view's colours mean (empty in the other views)."""
        if self._geometry is None or self.mode not in GEOMETRY_CAPTIONS:
            return []
        return self._geometry.legend(self.mode)

    def set_one_to_one(self) -> None:
        """One plate pixel per screen pixel, centred: where plate-resolution depth shows."""
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.update()
        self._emit_zoom()

    @property
    def legend_labels(self) -> tuple[str, str] | None:
        """The colour bar's (near, far) end values as text, or None when no bar is shown."""
        if self._legend is None:
            return None
        return f"near {_end_text(self._legend[-1])}", f"far {_end_text(self._legend[0])}"

    @property
    def legend_ticks(self) -> list[tuple[float, str]]:
        """The colour bar's ticks: (position 0 = far .. 1 = near, value as text)."""
        return [] if self._legend is None else colour_bar_ticks(self._legend)

    @property
    def legend_note(self) -> str:
        """A line under the colour bar when the values need explaining."""
        if self._legend is None or self._legend_title != "inverse":
            return ""
        return NEGATIVE_INVERSE_NOTE if np.nanmin(self._legend) < 0 else ""

    @property
    def zoom_text(self) -> str:
        """The zoom as the toolbar shows it: ``43 % (fit)``, ``100 %``."""
        if self._plate_size() is None:
            return ""
        return f"{100 * self._scale():.0f} %" + (" (fit)" if self.zoom is None else "")

    def set_mode(self, mode: str) -> None:
        if mode not in VIEW_MODES:
            raise ValueError(f"`mode` must be one of {VIEW_MODES}; got {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)
            self.update()
            self._emit_zoom()  # side by side is twice as wide; depth views keep a bar

    def set_colormap(self, cmap: str) -> None:
        self.colormap = cmap
        self._render_depth()

    def reset_view(self) -> None:
        self.zoom = None
        self.pan = QPointF(0.0, 0.0)
        self.update()
        self._emit_zoom()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._emit_zoom()

    def _emit_zoom(self) -> None:
        if self._plate_size() is not None:
            self.zoom_changed.emit(self._scale(), self.zoom is None)

    def _render_depth(self) -> None:
        self._depth_image = None
        if self._depth01 is not None:
            self._depth_image = to_qimage(colorize(self._depth01, self.colormap))
            ramp = np.linspace(1.0, 0.0, 256, dtype=np.float32)[:, None]  # near at the top
            self._bar_image = to_qimage(colorize(np.repeat(ramp, 2, axis=1), self.colormap))
        self.update()

    # ---------------------------------------------------------------- geometry
    def _plate_size(self) -> tuple[int, int] | None:
        """(width, height) of one image in image space."""
        if self._rgb is not None:
            return self._rgb.shape[1], self._rgb.shape[0]
        if self._depth01 is not None:
            return self._depth01.shape[1], self._depth01.shape[0]
        return None

    def _canvas_size(self) -> tuple[int, int] | None:
        size = self._plate_size()
        if size is None:
            return None
        return (size[0] * 2, size[1]) if self.mode == "side" else size

    def _bar_shown(self) -> bool:
        shows_depth = self.mode not in ("rgb", *GEOMETRY_CAPTIONS)  # P/N have their own legend
        return shows_depth and self._depth01 is not None and self._legend is not None

    def colour_bar_width(self) -> int:
        """Screen pixels kept at the right edge for the colour bar (0 without one): the
        image is fitted beside it, never under it."""
        if not self._bar_shown():
            return 0
        metrics = self.fontMetrics()
        texts = [text for _, text in self.legend_ticks]
        texts += [*self.legend_labels, self._legend_title]
        text = max(metrics.horizontalAdvance(t) for t in texts)
        return COLOUR_BAR_GAP + COLOUR_BAR_SIZE[0] + text + 26

    def image_area(self) -> QRectF:
        """The part of the widget images are fitted into (the colour bar is to its right)."""
        return QRectF(0, 0, max(self.width() - self.colour_bar_width(), 1), self.height())

    def _scale(self) -> float:
        canvas = self._canvas_size()
        if canvas is None:
            return 1.0
        if self.zoom is not None:
            return self.zoom
        area = self.image_area()
        return min(area.width() / canvas[0], area.height() / canvas[1])

    def _canvas_rect(self) -> QRectF:
        """Where the whole canvas lands on screen."""
        canvas = self._canvas_size() or (1, 1)
        scale = self._scale()
        width, height = canvas[0] * scale, canvas[1] * scale
        area = self.image_area()
        left = (area.width() - width) / 2 + self.pan.x()
        top = (area.height() - height) / 2 + self.pan.y()
        return QRectF(left, top, width, height)

    def image_position(self, point: QPointF) -> tuple[str, float, float] | None:
        """Screen point → (which image, x, y) in plate pixels, or None off the image."""
        size = self._plate_size()
        if size is None:
            return None
        rect = self._canvas_rect()
        scale = self._scale()
        x = (point.x() - rect.left()) / scale
        y = (point.y() - rect.top()) / scale
        width, height = size
        if self.mode == "side":
            if not (0 <= x < 2 * width and 0 <= y < height):
                return None
            return ("rgb", x, y) if x < width else ("depth", x - width, y)
        if not (0 <= x < width and 0 <= y < height):
            return None
        if self.mode == "wipe":
            return ("rgb", x, y) if x < self.wipe * width else ("depth", x, y)
        return self.mode, x, y

    # ---------------------------------------------------------------- painting
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 27))
        size = self._plate_size()
        if size is None:
            self._draw_message(painter, self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale() < 1)
        rect = self._canvas_rect()
        painter.save()
        painter.setClipRect(self.image_area())
        if self.mode == "side":
            half = rect.width() / 2
            left = QRectF(rect.left(), rect.top(), half, rect.height())
            right = QRectF(rect.left() + half, rect.top(), half, rect.height())
            self._draw_image(painter, self._rgb_image, left, "RGB")
            self._draw_image(painter, self._depth_image, right, self._depth_caption())
        elif self.mode == "wipe":
            split = rect.left() + self.wipe * rect.width()
            depth_part = QRectF(split, rect.top(), rect.right() - split, rect.height())
            self._draw_image(
                painter,
                self._depth_image,
                rect,
                self._depth_caption(),
                corner="right",
                text_rect=depth_part,
            )
            painter.save()
            painter.setClipRect(
                QRectF(rect.left(), rect.top(), split - rect.left(), rect.height()),
                Qt.ClipOperation.IntersectClip,
            )
            self._draw_image(painter, self._rgb_image, rect, "RGB")
            painter.restore()
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(QPointF(split, rect.top()), QPointF(split, rect.bottom()))
        elif self.mode == "depth":
            self._draw_image(painter, self._depth_image, rect, self._depth_caption())
        elif self.mode in GEOMETRY_CAPTIONS:
            image = self._geometry_images.get(self.mode)
            self._draw_image(painter, image, rect, GEOMETRY_CAPTIONS[self.mode])
        else:
            self._draw_image(painter, self._rgb_image, rect, "RGB")
        if self._matte_image is not None:
            for target in self._image_rects(rect):
                painter.drawImage(target, self._matte_image)
        self._draw_markers(painter, rect)
        painter.restore()
        if self._bar_shown():
            self._draw_colour_bar(painter)
        self._draw_geometry_legend(painter)

    def _draw_geometry_legend(self, painter: QPainter) -> None:
        """The P/N legend in the lower left corner: which colour is which axis, over what range."""
        lines = self.geometry_legend
        if not lines:
            return
        metrics = painter.fontMetrics()
        swatches = ("", "R", "G", "B") if self.mode == "position" else ()
        colours = {"R": QColor(255, 70, 70), "G": QColor(80, 230, 90), "B": QColor(90, 140, 255)}
        width = max(metrics.horizontalAdvance(line) for line in lines) + 28
        height = len(lines) * metrics.height() + 10
        box = QRectF(12, self.height() - height - 12, width, height)
        painter.fillRect(box, QColor(0, 0, 0, 180))
        for k, line in enumerate(lines):
            y = box.top() + 5 + k * metrics.height()
            key = swatches[k] if k < len(swatches) else ""
            if key:
                painter.fillRect(
                    QRectF(box.left() + 6, y + 3, 10, metrics.height() - 6), colours[key]
                )
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(QPointF(box.left() + 22, y + metrics.ascent()), line)

    def _image_rects(self, rect: QRectF) -> list[QRectF]:
        """The screen rectangles that each show the whole plate (two side by side)."""
        if self.mode == "side":
            half = rect.width() / 2
            return [
                QRectF(rect.left(), rect.top(), half, rect.height()),
                QRectF(rect.left() + half, rect.top(), half, rect.height()),
            ]
        return [rect]

    def marker_points(self) -> list[tuple[QPointF, dict]]:
        """Screen position of every marker (twice side by side: on the plate and the depth)."""
        size = self._plate_size()
        if size is None:
            return []
        scale = self._scale()
        return [
            (QPointF(target.left() + m["x"] * scale, target.top() + m["y"] * scale), m)
            for target in self._image_rects(self._canvas_rect())
            for m in self.markers
        ]

    def _draw_markers(self, painter: QPainter, rect: QRectF) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for point, marker in self.marker_points():
            colour = MARKER_COLORS[marker["kind"]]
            painter.setPen(QPen(QColor(0, 0, 0), 3))
            painter.drawEllipse(point, MARKER_RADIUS, MARKER_RADIUS)
            painter.setPen(QPen(colour, 2))
            painter.drawEllipse(point, MARKER_RADIUS, MARKER_RADIUS)
            painter.drawLine(point - QPointF(2, 0), point + QPointF(2, 0))
            painter.drawLine(point - QPointF(0, 2), point + QPointF(0, 2))
        painter.restore()

    def marker_at(self, point: QPointF) -> dict | None:
        """The marker nearest to screen ``point`` within MARKER_HOVER_PX, or None."""
        best, best_d = None, float(MARKER_HOVER_PX)
        for where, marker in self.marker_points():
            d = ((where.x() - point.x()) ** 2 + (where.y() - point.y()) ** 2) ** 0.5
            if d <= best_d:
                best, best_d = marker, d
        return best

    def colour_bar_rect(self) -> QRectF:
        """Where the colour ramp itself is drawn (near at the top)."""
        metrics = self.fontMetrics()
        width, tallest = COLOUR_BAR_SIZE
        top = 12 + 2 * metrics.height()
        height = max(min(tallest, self.height() - top - 2 * metrics.height() - 12), 40)
        left = self.width() - self.colour_bar_width() + COLOUR_BAR_GAP + 4
        return QRectF(left, top, width, height)

    def _draw_colour_bar(self, painter: QPainter) -> None:
        """The colour map beside the image: what the values are, ticks at round values, and
        which end is near."""
        if self._bar_image is None:
            return
        metrics = painter.fontMetrics()
        bar = self.colour_bar_rect()
        painter.drawImage(bar, self._bar_image)
        painter.setPen(QColor(255, 255, 255))
        left = bar.left() - 4
        painter.drawText(QPointF(left, 8 + metrics.ascent()), self._legend_title)
        near, far = self.legend_labels
        painter.setPen(QColor(200, 200, 210))
        painter.drawText(QPointF(left, bar.top() - 4 - metrics.descent()), near)
        painter.drawText(QPointF(left, bar.bottom() + 4 + metrics.ascent()), far)
        painter.setPen(QColor(255, 255, 255))
        for position, text in self.legend_ticks:
            y = bar.bottom() - position * bar.height()
            painter.drawLine(QPointF(bar.right(), y), QPointF(bar.right() + 4, y))
            painter.drawText(QPointF(bar.right() + 7, y + metrics.ascent() / 2 - 1), text)
        note = self.legend_note
        if note:
            area = self.image_area()
            wrap = QRectF(12, 0, area.width() - 24, 0)
            box = painter.boundingRect(
                wrap, Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, note
            ).adjusted(-6, -3, 6, 3)
            box.moveBottom(self.height() - 8)
            painter.fillRect(box, QColor(0, 0, 0, 170))
            painter.setPen(QColor(255, 214, 120))
            painter.drawText(box.adjusted(6, 3, -6, -3), Qt.TextFlag.TextWordWrap, note)

    def _depth_caption(self) -> str:
        parts = [f"Depth · {self.colormap}"]
        parts += [text for text in (self._depth_label, self._resolution_note) if text]
        return " · ".join(parts)

    def _draw_image(
        self,
        painter: QPainter,
        image: QImage | None,
        target: QRectF,
        caption: str,
        corner: str = "left",
        text_rect: QRectF | None = None,
    ) -> None:
        """``image`` over ``target``; without one, a line saying why, centred in
        ``text_rect`` (the part of ``target`` that shows, e.g. right of the wipe)."""
        if image is None:
            painter.fillRect(target, QColor(40, 40, 46))
            text = placeholder_text(caption, self._geometry_message)
            painter.setPen(QColor(200, 200, 210))
            painter.drawText(
                text_rect if text_rect is not None else target,
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                text,
            )
        else:
            painter.drawImage(target, image)
        self._draw_caption(painter, target, caption, corner)

    def _draw_caption(self, painter: QPainter, target: QRectF, caption: str, corner: str) -> None:
        visible = target.intersected(self.image_area())
        if visible.isEmpty():
            return
        font = QFont(self.font())
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        width = metrics.horizontalAdvance(caption) + 12
        height = metrics.height() + 6
        left = visible.left() + 6 if corner == "left" else visible.right() - width - 6
        box = QRectF(left, visible.top() + 6, width, height)
        painter.fillRect(box, QColor(0, 0, 0, 160))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, caption)

    def _draw_message(self, painter: QPainter, text: str) -> None:
        painter.setPen(QColor(200, 200, 210))
        painter.drawText(
            self.rect().adjusted(20, 20, -20, -20),
            Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
            text,
        )

    # ---------------------------------------------------------------- interaction
    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._plate_size() is None:
            return
        old = self._scale()
        factor = 1.25 ** (event.angleDelta().y() / 120)
        new = min(max(old * factor, ZOOM_RANGE[0]), ZOOM_RANGE[1])
        self.zoom_at(event.position(), new)

    def zoom_at(self, point: QPointF, scale: float) -> None:
        """Zoom to ``scale`` keeping the image point under ``point`` in place."""
        old = self._scale()
        rect = self._canvas_rect()
        anchor = (point - rect.topLeft()) / old  # canvas pixels under the cursor
        self.zoom = scale
        canvas = self._canvas_size() or (1, 1)
        area = self.image_area()
        centred = QPointF(
            (area.width() - canvas[0] * scale) / 2, (area.height() - canvas[1] * scale) / 2
        )
        self.pan = point - anchor * scale - centred
        self.update()
        self._emit_zoom()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.reset_view()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if button == Qt.MouseButton.LeftButton and self.mode == "wipe" and self._near_wipe(event):
            self._drag = "wipe"
            self._set_wipe_from(event.position())
        elif button in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            self._drag = "pan"
            self._drag_origin = event.position()
            self._pan_origin = QPointF(self.pan)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag == "wipe":
            self._set_wipe_from(event.position())
        elif self._drag == "pan":
            if self.zoom is None:
                self.zoom = self._scale()
                self._emit_zoom()
            self.pan = self._pan_origin + (event.position() - self._drag_origin)
            self.update()
        self.hovered.emit(self.describe(event.position()))
        marker = self.marker_at(event.position())
        if marker is not None:
            QToolTip.showText(event.globalPosition().toPoint(), marker["text"], self)
        else:
            QToolTip.hideText()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None

    def leaveEvent(self, event) -> None:
        self.hovered.emit("")

    def _near_wipe(self, event: QMouseEvent) -> bool:
        """A press on the wipe line (or anywhere with Shift) moves the wipe; others pan."""
        rect = self._canvas_rect()
        split = rect.left() + self.wipe * rect.width()
        shift = event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        return bool(shift) or abs(event.position().x() - split) <= WIPE_GRAB_PX

    def _set_wipe_from(self, point: QPointF) -> None:
        rect = self._canvas_rect()
        if rect.width() > 0:
            self.wipe = min(max((point.x() - rect.left()) / rect.width(), 0.0), 1.0)
            self.update()

    def describe(self, point: QPointF) -> str:
        """The readout for a screen point: pixel, RGB and depth under it."""
        where = self.image_position(point)
        if where is None:
            return ""
        _, x, y = where
        ix, iy = int(x), int(y)
        parts = [f"x {ix}  y {iy}"]
        if self._rgb is not None:
            r, g, b = self._rgb[iy, ix]
            parts.append(f"RGB {r:.3f} {g:.3f} {b:.3f}")
        if self._depth_values is not None:
            width, height = self._plate_size()
            dh, dw = self._depth_values.shape
            dy = min(int(y * dh / height), dh - 1)
            dx = min(int(x * dw / width), dw - 1)
            label = f" ({self._depth_label})" if self._depth_label else ""
            parts.append(f"depth {float(self._depth_values[dy, dx]):.4g}{label}")
        if self._scene_depth is not None:
            width, height = self._plate_size()
            zh, zw = self._scene_depth.shape
            zy = min(int(y * zh / height), zh - 1)
            zx = min(int(x * zw / width), zw - 1)
            parts.append(f"Z {float(self._scene_depth[zy, zx]):.4g} {self._scene_units}")
        marker = self.marker_at(point)
        if marker is not None:
            parts.append(marker["text"])
        return "   ".join(parts)


def placeholder_text(caption: str, geometry_message: str = "") -> str:
    """What an empty image says: the depth before a run, a frame that did not read, or why
    there is no P or N view."""
    if caption in GEOMETRY_CAPTIONS.values():
        return geometry_message or "No depth yet: press Run"
    return "No frame" if caption == "RGB" else "No depth yet: press Run"


def colour_bar_ticks(values: np.ndarray, count: int = COLOUR_BAR_TICKS) -> list[tuple[float, str]]:
    """Ticks at round values for a bar whose ``values`` are sampled evenly from position 0
    (far) to 1 (near); a scale that is not linear (depth, scene Z) places them by those
    samples. Positions where the values are not finite (a fit that gives no depth there)
    get no tick."""
    positions = np.linspace(0.0, 1.0, len(values))
    good = np.isfinite(values)
    if good.sum() < 2:
        return []
    values, positions = values[good], positions[good]
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return [(float(positions.mean()), _end_text(low))]
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    places = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / magnitude == 2.5 else 0)
    ticks = np.arange(math.ceil(low / step), math.floor(high / step) + 1) * step
    order = np.argsort(values)
    found = np.interp(ticks, values[order], positions[order])
    return [(float(p), f"{t + 0.0:.{places}f}") for p, t in zip(found, ticks, strict=True)]


def _end_text(value: float) -> str:
    return f"{value:.4g}" if np.isfinite(value) else "n/a"


def matte_overlay(matte: np.ndarray) -> QImage:
    """A matte as an RGBA image in MATTE_COLOR, MATTE_OPACITY opaque where it is 1."""
    height, width = matte.shape
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = MATTE_COLOR
    rgba[..., 3] = (np.clip(matte, 0.0, 1.0) * (MATTE_OPACITY * 255.0) + 0.5).astype(np.uint8)
    return QImage(rgba.data, width, height, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
