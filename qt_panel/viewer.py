"""The image viewer: RGB, depth, side by side or a wipe, with zoom, pan and a value readout."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from rollingdepth_core.preview import colorize

VIEW_MODES = ("rgb", "depth", "side", "wipe")
VIEW_MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "side": "Side by side", "wipe": "Wipe"}
ZOOM_RANGE = (0.05, 64.0)
# How close (in screen pixels) a press must be to the wipe line to grab it.
WIPE_GRAB_PX = 12
COLOUR_BAR_SIZE = (14, 180)  # width, largest height in screen pixels
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
        self.zoom: float | None = None  # None = fit to the widget
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
        self._legend: tuple[float, float] | None = None  # values at far (0) and near (1)
        self._bar_image: QImage | None = None
        self._resolution_note = ""  # e.g. "edge 1920x1080": the depth is at plate resolution
        self._scene_depth: np.ndarray | None = None  # [h,w] Z in scene units (anchored)
        self._scene_units = ""
        self.markers: list[dict] = []  # anchors on this frame: x, y, kind, text
        self._matte_image: QImage | None = None  # the holdout matte's overlay, plate-sized
        self._drag: str | None = None  # "pan" | "wipe"
        self._drag_origin = QPointF()
        self._pan_origin = QPointF()

    # ---------------------------------------------------------------- content
    def set_rgb(self, rgb: np.ndarray | None) -> None:
        self._rgb = rgb
        self._rgb_image = None if rgb is None else to_qimage(_to_uint8(rgb))
        self.update()

    def set_depth(
        self,
        depth01: np.ndarray | None,
        values: np.ndarray | None = None,
        label: str = "",
        legend: tuple[float, float] | None = None,
        resolution_note: str = "",
    ) -> None:
        """``depth01`` colours the map; ``values`` (same shape) is what the readout shows;
        ``legend`` is (value at the far end, value at the near end) for the colour bar;
        ``resolution_note`` names a plate-resolution map ("edge 1920x1080") in the caption."""
        self._resolution_note = resolution_note
        self._depth01 = depth01
        self._depth_values = depth01 if values is None else values
        self._depth_label = label
        self._legend = legend if depth01 is not None else None
        self._render_depth()

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

    def set_one_to_one(self) -> None:
        """One plate pixel per screen pixel, centred: where plate-resolution depth shows."""
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.update()

    @property
    def legend_labels(self) -> tuple[str, str] | None:
        """The colour bar's (near, far) texts, or None when no bar is shown."""
        if self._legend is None:
            return None
        far, near = self._legend
        return f"near {near:.4g}", f"far {far:.4g}"

    @property
    def legend_note(self) -> str:
        """A line under the colour bar when the values need explaining."""
        if self._legend is None or self._depth_label != "inverse":
            return ""
        return NEGATIVE_INVERSE_NOTE if min(self._legend) < 0 else ""

    def set_mode(self, mode: str) -> None:
        if mode not in VIEW_MODES:
            raise ValueError(f"`mode` must be one of {VIEW_MODES}; got {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)
            self.update()

    def set_colormap(self, cmap: str) -> None:
        self.colormap = cmap
        self._render_depth()

    def reset_view(self) -> None:
        self.zoom = None
        self.pan = QPointF(0.0, 0.0)
        self.update()

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

    def _scale(self) -> float:
        canvas = self._canvas_size()
        if canvas is None:
            return 1.0
        if self.zoom is not None:
            return self.zoom
        return min(self.width() / canvas[0], self.height() / canvas[1])

    def _canvas_rect(self) -> QRectF:
        """Where the whole canvas lands on screen."""
        canvas = self._canvas_size() or (1, 1)
        scale = self._scale()
        width, height = canvas[0] * scale, canvas[1] * scale
        left = (self.width() - width) / 2 + self.pan.x()
        top = (self.height() - height) / 2 + self.pan.y()
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
        if self.mode == "side":
            half = rect.width() / 2
            left = QRectF(rect.left(), rect.top(), half, rect.height())
            right = QRectF(rect.left() + half, rect.top(), half, rect.height())
            self._draw_image(painter, self._rgb_image, left, "RGB")
            self._draw_image(painter, self._depth_image, right, self._depth_caption())
        elif self.mode == "wipe":
            self._draw_image(
                painter, self._depth_image, rect, self._depth_caption(), corner="right"
            )
            split = rect.left() + self.wipe * rect.width()
            painter.save()
            painter.setClipRect(QRectF(rect.left(), rect.top(), split - rect.left(), rect.height()))
            self._draw_image(painter, self._rgb_image, rect, "RGB")
            painter.restore()
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(QPointF(split, rect.top()), QPointF(split, rect.bottom()))
        elif self.mode == "depth":
            self._draw_image(painter, self._depth_image, rect, self._depth_caption())
        else:
            self._draw_image(painter, self._rgb_image, rect, "RGB")
        if self._matte_image is not None:
            for target in self._image_rects(rect):
                painter.drawImage(target, self._matte_image)
        self._draw_markers(painter, rect)
        if self.mode != "rgb" and self._depth_image is not None:
            self._draw_colour_bar(painter)

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

    def _draw_colour_bar(self, painter: QPainter) -> None:
        """The colour map with its end values, at the right edge; near is at the top."""
        labels = self.legend_labels
        if labels is None or self._bar_image is None:
            return
        metrics = painter.fontMetrics()
        width, tallest = COLOUR_BAR_SIZE
        height = max(min(tallest, self.height() - 4 * metrics.height()), 40)
        text_width = max(metrics.horizontalAdvance(t) for t in labels)
        bar = QRectF(self.width() - width - 12, 12 + metrics.height(), width, height)
        panel = QRectF(
            bar.left() - text_width - 14,
            6,
            text_width + width + 22,
            height + 3 * metrics.height() + 14,
        )
        painter.fillRect(panel, QColor(0, 0, 0, 160))
        painter.drawImage(bar, self._bar_image)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(QPointF(panel.left() + 6, bar.top() + metrics.ascent() / 2), labels[0])
        painter.drawText(QPointF(panel.left() + 6, bar.bottom() + metrics.ascent() / 2), labels[1])
        caption = self._depth_label or "depth"
        painter.drawText(
            QRectF(
                panel.left(), panel.bottom() - metrics.height() - 4, panel.width(), metrics.height()
            ),
            Qt.AlignmentFlag.AlignCenter,
            caption,
        )
        note = self.legend_note
        if note:
            area = QRectF(12, self.height() - 3 * metrics.height() - 12, self.width() - 24, 0)
            box = painter.boundingRect(
                area, Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, note
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
    ) -> None:
        if image is None:
            painter.fillRect(target, QColor(40, 40, 46))
            text = "No depth yet: press Run" if caption != "RGB" else "No frame"
            painter.setPen(QColor(200, 200, 210))
            painter.drawText(target, Qt.AlignmentFlag.AlignCenter, text)
        else:
            painter.drawImage(target, image)
        self._draw_caption(painter, target, caption, corner)

    def _draw_caption(self, painter: QPainter, target: QRectF, caption: str, corner: str) -> None:
        visible = target.intersected(QRectF(self.rect()))
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
        centred = QPointF(
            (self.width() - canvas[0] * scale) / 2, (self.height() - canvas[1] * scale) / 2
        )
        self.pan = point - anchor * scale - centred
        self.update()

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


def matte_overlay(matte: np.ndarray) -> QImage:
    """A matte as an RGBA image in MATTE_COLOR, MATTE_OPACITY opaque where it is 1."""
    height, width = matte.shape
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = MATTE_COLOR
    rgba[..., 3] = (np.clip(matte, 0.0, 1.0) * (MATTE_OPACITY * 255.0) + 0.5).astype(np.uint8)
    return QImage(rgba.data, width, height, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
