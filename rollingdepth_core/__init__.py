"""RollingDepth: temporally consistent depth for VFX plates (engine; no bpy, no Qt)."""

__version__ = "0.1.0"

from .anchors import AnchorFit, AnchorSampler, fit_anchors, load_anchors  # noqa: E402,F401
