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
    ("preset", "Preset's", "The preset's precision (fp16 on a GPU, fp32 on the CPU)"),
    ("fp32", "fp32", "Full precision"),
    ("fp16", "fp16", "Half precision (GPU)"),
    ("bf16", "bf16", "bfloat16 (recent GPUs; CPUs with AVX512-BF16 or AMX, about 2x fp32)"),
]


class RollingDepthPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_path: StringProperty(
        name="Engine Python",
        description=(
            "The Python interpreter of the environment where RollingDepth is installed "
            "(e.g. /path/to/rollingdepth/.venv/bin/python), or its `rollingdepth` executable"
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
    """Run the engine's `check` and report its Python, torch, device and whether the
    checkpoint is there"""

    bl_idname = "rollingdepth.check_engine"
    bl_label = "Check Engine"
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
