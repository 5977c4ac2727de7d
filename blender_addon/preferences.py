"""Add-on preferences: where the engine is, which weights, which device."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from .engine import PREFERENCES_HINT, EngineError, check_engine, in_blender_terms

DEVICE_ITEMS = [
    ("auto", "Automatic", "CUDA, then Apple MPS, then CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("mps", "Apple MPS", "Apple silicon GPU"),
    ("cpu", "CPU", "Slow, but always there"),
]
DTYPE_ITEMS = [
    ("preset", "As the Preset", "Half precision on a GPU, full precision on the CPU"),
    ("fp32", "Full (32-bit)", "Full precision: the slowest, never overflows"),
    ("fp16", "Half (16-bit)", "Half precision: GPUs only, about twice as fast as full"),
    (
        "bf16",
        "Brain Float (16-bit)",
        "Recent GPUs and the newest server CPUs: about twice as "
        "fast as full; elsewhere slower than full",
    ),
]


class RollingDepthPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_path: StringProperty(
        name="Engine Python",
        description=(
            "The Python of the environment RollingDepth is installed in (e.g. "
            "/path/to/rollingdepth/.venv/bin/python), its rollingdepth program, or the folder "
            "it was installed in"
        ),
        subtype="FILE_PATH",
        default="",
    )
    checkpoint: StringProperty(
        name="Checkpoint",
        description="Hugging Face hub id or a local folder with the weights (diffusers layout)",
        default="prs-eth/rollingdepth-v1-0",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    dtype: EnumProperty(name="Precision", items=DTYPE_ITEMS, default="preset")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "engine_path")
        layout.prop(self, "checkpoint")
        layout.prop(self, "device")
        layout.prop(self, "dtype")
        row = layout.row()
        row.operator(ROLLINGDEPTH_OT_check_engine.bl_idname, icon="CHECKMARK")


def empty_checkpoint_text(lead: str = "Not ready") -> str:
    default = RollingDepthPreferences.bl_rna.properties["checkpoint"].default
    return (
        f"{lead}: the Checkpoint preference is empty. Set Checkpoint in {PREFERENCES_HINT} to "
        f"a folder with the weights (diffusers layout) or to the hub id {default!r}, then "
        "press Check Engine there."
    )


def preferences(context=None) -> RollingDepthPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class ROLLINGDEPTH_OT_check_engine(bpy.types.Operator):
    """Check that the engine runs and the weights are there"""

    bl_idname = "rollingdepth.check_engine"
    bl_label = "Check Engine"
    bl_description = (
        "Start the engine once and report its Python, torch, device and whether the "
        "checkpoint's weights are there"
    )
    bl_options = {"INTERNAL"}

    def execute(self, context):
        prefs = preferences(context)
        checkpoint = prefs.checkpoint.strip()
        if not checkpoint:  # a run would try the engine's default weights, and fail
            self.report({"ERROR"}, empty_checkpoint_text())
            return {"CANCELLED"}
        try:
            info = check_engine(bpy.path.abspath(prefs.engine_path), checkpoint)
        except EngineError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        gpu = "CUDA" if info.get("cuda") else ("MPS" if info.get("mps") else "no GPU")
        engine = (
            f"RollingDepth {info.get('rollingdepth', '?')}: Python {info.get('python', '?')}, "
            f"torch {info.get('torch', '?')}, device {info.get('device', '?')} ({gpu})"
        )
        if info.get("checkpoint_error"):
            self.report(
                {"ERROR"},
                f"Not ready: a run would fail on the Checkpoint preference: "
                f"{in_blender_terms(info['checkpoint_error'])}. {engine}",
            )
            return {"CANCELLED"}
        if not info.get("checkpoint_folder"):
            self.report(
                {"WARNING"},
                f"{engine}. The weights {checkpoint!r} are not downloaded yet: the first run "
                "downloads them from the Hugging Face hub (internet needed, a few GB).",
            )
            return {"FINISHED"}
        self.report({"INFO"}, f"Ready: {engine}, weights in {info['checkpoint_folder']}")
        return {"FINISHED"}
