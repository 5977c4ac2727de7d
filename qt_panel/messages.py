"""The engine's messages in the panel's words.

The engine's errors are written for the command line: they name flags (`--input-colorspace`)
and commands (`rollingdepth colorspaces`). In the panel the same message names the control
that sets the value and where the list of choices is; the engine's own line stays in the
dialog's details.
"""

from __future__ import annotations

import difflib
import re

from rollingdepth_core.colorspace import LIST_HINT

# Each flag the engine's messages name, and the panel control that sets the same value.
CONTROLS = {
    "--input-colorspace": "Settings > Colour > Input space",
    "--ocio-view": "Settings > Colour > View",
    "--ocio-config": "the OCIO config ($OCIO)",
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
    "--anchors": "the Anchors tab",
    "--anchor-fit": "Anchors > fit",
    "--holdout-alpha": "a holdout matte's alpha",
    "--holdout": "File > Holdout matte…",
    "--dilations": "Settings > Dilations",
    "--camera": "Camera > Camera file",
    "--passes": "Camera > Export",
}
# Where the panel lists what the engine's list commands print.
COMMANDS = {
    LIST_HINT: (
        "the Input space list holds the config's colour spaces, and the … button beside it "
        "lists its spaces, displays and views"
    ),
    "`rollingdepth selftest` checks the installation without weights": (
        "a tiny random checkpoint (see the README) checks the installation without weights"
    ),
}
_FLAG = re.compile(r"`(--[a-z][a-z-]*)(?: ([^`]*))?`")


def in_panel_words(message: str) -> str:
    """``message`` with command-line flags and commands replaced by the panel's controls."""
    for command, words in COMMANDS.items():
        message = message.replace(command, words)

    def control(match: re.Match) -> str:
        name = CONTROLS.get(match.group(1))
        if name is None:
            return match.group(0)
        value = match.group(2)
        return f"{name} ({value})" if value else name

    return _FLAG.sub(control, message)


def closest_names(name: str, choices: list[str], count: int = 5) -> list[str]:
    """The choices that look most like ``name`` (a typo's likely meaning), best first."""
    lowered = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=count, cutoff=0.3)
    return [lowered[f] for f in found]
