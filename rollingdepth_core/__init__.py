"""RollingDepth: temporally consistent depth for VFX plates (engine; no bpy, no Qt)."""

__version__ = "0.1.0"

from .upsample import upsample_depth as upsample_depth  # noqa: E402
