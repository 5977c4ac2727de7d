"""The engine's messages in the panel's words.

The engine's errors are written for the command line: they name flags (`--input-colorspace`)
and commands (`rollingdepth colorspaces`). In the panel the same message names the control
that sets the value and where the list of choices is; the engine's own line stays in the
dialog's details.
"""

from __future__ import annotations

import difflib

from rollingdepth_core import protocol
from rollingdepth_core.colorspace import LIST_HINT

# Each flag the engine's messages name, and the panel control that sets the same value
# (protocol.SETTING_NAMES gives the neutral names of the rest).
CONTROLS = {
    "--input-colorspace": "Settings > Colour > Input space",
    "--ocio-view": "Settings > Colour > View",
    "--ocio-config": "the OCIO config",
    "--ocio-exact": "the exact OCIO transform",
    "--depth-mode": "Depth convention",
    "--near": "Near",
    "--far": "Far",
    "--half": "Export > Precision: half",
    "--channel": "Export > Channel",
    "--confidence": "Export > confidence channel",
    "--restore-res": "Export > Size: at the plate's resolution",
    "--res": "Settings > Resolution",
    "--device": "Settings > Device",
    "--checkpoint": "Settings > Checkpoint",
    "--anchors": "the Anchors tab",
    "--anchor-fit": "Anchors > fit",
    "--holdout-alpha": "a holdout matte's alpha",
    "--holdout": "File > Holdout matte…",
    "--dilations": "Settings > Dilations",
    "--overwrite": "replacing the folder's frames",
    "--camera": "Camera > Camera file",
    "--passes": "Camera > Export",
}
# Where the panel lists what the engine's list commands print.
COMMANDS = {
    LIST_HINT: (
        "the Input space list holds the config's colour spaces, and the … button beside it "
        "lists its spaces, displays and views"
    ),
}
# What to do in the panel for an error kind (protocol.ERROR_KINDS), after the engine's reason.
PANEL_FIXES = {
    "WeightsError": (
        "Set Settings > Checkpoint to a folder with the weights (diffusers layout), or to the "
        "hub id on a machine that can download them"
    ),
    "DeviceError": "Choose another Settings > Device",
    "OutputError": "Choose another folder",
    "NonFiniteDepth": "Run again on the CPU, or with full precision",
}


def in_panel_words(message: str) -> str:
    """``message`` with command-line flags and commands replaced by the panel's controls."""
    for command, words in COMMANDS.items():
        message = message.replace(command, words)
    return protocol.artist_text(message, CONTROLS)


def error_text(kind: str, message: str) -> str:
    """What the panel says for an engine error of ``kind`` (protocol.ERROR_KINDS): what went
    wrong, the engine's reason in the panel's words, and the fix in the panel."""
    lead = protocol.ERROR_KINDS.get(kind, protocol.ERROR_KINDS["RollingDepthError"])
    text = f"{lead}: {in_panel_words(message).rstrip('. ')}."
    fix = PANEL_FIXES.get(kind)
    return f"{text} {fix}." if fix else text


def closest_names(name: str, choices: list[str], count: int = 5) -> list[str]:
    """The choices that look most like ``name`` (a typo's likely meaning), best first."""
    lowered = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=count, cutoff=0.3)
    return [lowered[f] for f in found]
