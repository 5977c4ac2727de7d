"""Add-on preferences: where the engine is (or Set Up Engine makes one), which weights, which
device."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from .engine import PREFERENCES_HINT, EngineError, check_engine, in_blender_terms
from .setup_operators import (
    ROLLINGDEPTH_OT_cancel_setup,
    ROLLINGDEPTH_OT_setup_engine,
    SelftestRun,
    _BackgroundTaskOperator,
    current_task,
    selftest_outcome,
)

DEVICE_ITEMS = [
    ("auto", "Automatic", "CUDA, then Apple MPS, then CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("mps", "Apple MPS", "Apple silicon GPU"),
    ("cpu", "CPU", "Slow, but always there"),
]
TORCH_SOURCE_ITEMS = [
    (
        "auto",
        "Automatic",
        "The build for this machine: CUDA with an NVIDIA GPU (Linux, Windows), "
        "MPS on Apple silicon, else the CPU build",
    ),
    (
        "registry",
        "Package registry",
        "PyTorch's build on pypi.org: CUDA on Linux, CPU on Windows, MPS on macOS",
    ),
    ("pytorch-cpu", "CPU (PyTorch's site)", "The CPU build from download.pytorch.org"),
    (
        "pytorch-cuda",
        "CUDA (PyTorch's site)",
        "A CUDA build from download.pytorch.org, chosen by the NVIDIA driver",
    ),
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
    setup_python: StringProperty(
        name="Python for Set Up",
        description=(
            "The Python 3.10-3.12 Set Up Engine makes the engine with; empty: Blender's own "
            "Python when it is 3.10-3.12, else one found on this computer"
        ),
        subtype="FILE_PATH",
        default="",
    )
    engine_package: StringProperty(
        name="Engine Package",
        description=(
            "The rollingdepth wheel (.whl) Set Up Engine installs; empty: the one that came "
            "with this add-on"
        ),
        subtype="FILE_PATH",
        default="",
    )
    torch_source: EnumProperty(name="Torch Source", items=TORCH_SOURCE_ITEMS, default="auto")
    setup_status: StringProperty(name="Set-up", default="")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "engine_path")
        layout.prop(self, "checkpoint")
        layout.prop(self, "device")
        layout.prop(self, "dtype")
        row = layout.row()
        task = current_task()
        busy = task is not None and not task.done
        row.enabled = not busy
        row.operator(ROLLINGDEPTH_OT_setup_engine.bl_idname, icon="IMPORT")
        row.operator(ROLLINGDEPTH_OT_check_engine.bl_idname, icon="CHECKMARK")
        if busy:
            layout.operator(ROLLINGDEPTH_OT_cancel_setup.bl_idname, icon="CANCEL")
            layout.label(text=task.status_text, icon="TIME")
        elif self.setup_status:
            layout.label(text=self.setup_status, icon="INFO")
        box = layout.box()
        box.label(text="Set Up Engine (optional settings)")
        box.prop(self, "torch_source")
        box.prop(self, "setup_python")
        box.prop(self, "engine_package")


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


class ROLLINGDEPTH_OT_check_engine(_BackgroundTaskOperator, bpy.types.Operator):
    """Run the engine's `check` (its Python, torch, device and whether the checkpoint is
    there), then its selftest: a tiny random model through every stage"""

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
            self._verdict = (
                "WARNING",
                f"{engine}. The weights {checkpoint!r} are not downloaded yet: the first run "
                "downloads them from the Hugging Face hub (internet needed, a few GB).",
            )
        else:
            self._verdict = ("INFO", f"Ready: {engine}, weights in {info['checkpoint_folder']}")
        if current_task() is not None and not current_task().done:
            self.report({"ERROR"}, "A RollingDepth set-up or check is running: cancel it or wait.")
            return {"CANCELLED"}
        try:
            task = SelftestRun(bpy.path.abspath(prefs.engine_path)).start()
        except EngineError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self.run(context, task)

    def _end(self, context, task):
        level, line = selftest_outcome(task, self._verdict)
        preferences(context).setup_status = line
        self.report({level}, line)
        return {"CANCELLED"} if level == "ERROR" else {"FINISHED"}
