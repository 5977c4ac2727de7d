"""What an artist reads in the front-ends, collected from their source, and the tells of words
that are not theirs (flags, class names, commands, engine jargon).

Both front-ends' tests use this: ``tests/qt/test_artist_words.py`` (the panel, also walking
a real window's widgets) and ``tests/blender/test_artist_words.py`` (the add-on, also reading
the registered classes' RNA). The source walk is static so that texts of rare states (an
error dialog, a cancelled batch) are read without reaching those states.

A text is user-visible when it is an argument of a call that shows it (a label, a tooltip, a
report, an error the front-end raises), a property's name or description, an operator's
docstring (Blender's tooltip), or a module constant in UPPER_CASE (the front-ends keep their
tables of words there). f-strings read with ``{}`` where a value goes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Calls whose string arguments (positional and these keywords) reach the artist.
SHOWING_CALLS = {
    # Qt
    "setToolTip", "setText", "setWindowTitle", "showMessage", "QLabel", "QPushButton",
    "QGroupBox", "QDockWidget", "addMenu", "addAction", "addRow", "setFormat",
    "setSpecialValueText", "setPlaceholderText", "addItem", "addItems", "setStatusTip",
    "QMessageBox", "show_error", "set_hint", "getOpenFileName", "getExistingDirectory",
    "getSaveFileName", "export_stopped", "QAction", "QToolBar", "setTitle",
    # Blender
    "report", "label", "wrapped_label", "poll_message_set", "status_text_set", "operator",
    "prop", "progress", "prop_search",
    # errors a front-end raises for the artist to read
    "EngineError", "StripError", "CameraSolveError", "ConfigError", "RollingDepthError",
}  # fmt: skip
SHOWING_KEYWORDS = {"text", "name", "description", "title", "message"}
# Calls whose positional arguments are not all words: how many leading ones are (an error's
# second argument is its kind; a layout's `prop(data, "name")` names a property).
WORD_ARGS = {"EngineError": 1, "prop": 0, "prop_search": 0, "operator": 0, "progress": 0}
# Signals whose emitted strings reach the artist (the controller's message, error, hint and
# job-ended lines).
SHOWING_SIGNALS = {"message", "error", "hint_changed", "job_ended"}
# Module constants that are not words (file filters, folder names, numbers' units ...).
NOT_WORDS = {
    "WORK_PREFIX", "ANCHORS_CSV", "ENGINE_MODULE", "VIDEO_FILTER", "MATTE_FILTER",
    "BLENDER_CHANNEL", "DEFAULT_CHANNEL", "DEFAULT_DEPTH_MODE", "DEFAULT_PRESET",
    "CUSTOM_PRESET", "RUNNING", "FINISHED", "FAILED", "CANCELLED", "RESULT_NEEDS",
    "MODEL_GROUP", "DEFAULTS_GROUP", "MODEL_KEYS", "DEFAULT_KEYS", "ADDON_ID",
    "SOURCE_KEY", "SIDECARS_KEY", "TIMECODES_KEY", "FPS_KEY", "DEPTH_RESOLUTIONS",
    "SETTING_OF_FLAG", "CONTROLS", "COMMANDS", "FLAG_SETTINGS", "OWN_KINDS",
    "PYTHON_IN_FOLDER", "ENVIRONMENT_FOLDERS",
}  # fmt: skip

# ---------------------------------------------------------------------------- the tells
# Each: a pattern, and what it says about the text. The glossary words (protocol.GLOSSARY)
# are the method words that stay; everything here is a word an artist should not meet.
TELLS: dict[str, re.Pattern] = {
    "a command-line flag": re.compile(r"(?<![\w/-])--[a-z][a-z-]+"),
    "a class name": re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b|Error\)"),
    "a stack trace": re.compile(r"Traceback|File \"", re.I),
    "a command": re.compile(r"`|\brollingdepth (?:run|infer|finalize|check|selftest|colorspaces|"
                            r"jobs)\b|\bhf download\b|\bpip install\b"),
    "an environment variable": re.compile(r"\$[A-Z]\w*|\b(?:HF|PYTHON|CUDA|XDG)_[A-Z_]+\b"),
    "a run id": re.compile(r"\brun id\b|\b[0-9a-f]{8,}\b", re.I),
    "engine jargon": re.compile(
        r"\bsnippets?\b|\bcapped\b|co-align|\bencod(?:e|ing) the plate\b|\bpublish(?:ing)?\b|"
        r"affine-invariant|metric-like|\[1/far|AVX|\bAMX\b|\bkeeps the preset's\b|"
        r"\bstdin\b|\bargv\b|\bsubprocess\b|\bdtype\b|\bfp16\b|\bbf16\b|\bfp32\b",
        re.I,
    ),
}  # fmt: skip


def tells(text: str) -> list[str]:
    """What in ``text`` gives away words that are not an artist's: 'name: match' each."""
    return [f"{name}: {m.group(0)!r}" for name, p in TELLS.items() for m in p.finditer(text)]


def layout_tells(text: str) -> list[str]:
    """A tooltip that keeps a docstring's line breaks and indents."""
    return ["a docstring line break"] if re.search(r"\n\s", text) else []


# ---------------------------------------------------------------------------- the source walk
@dataclass(frozen=True)
class Text:
    text: str
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.text!r}"


def _string(node: ast.AST) -> str | None:
    """The text of a str constant, an f-string (``{}`` for values) or a concatenation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left), _string(node.right)
        if left is not None or right is not None:
            return (left or "{}") + (right or "{}")
    if isinstance(node, ast.IfExp):
        return _string(node.body) or _string(node.orelse)
    return None


def _strings_in(node: ast.AST) -> list[str]:
    """Every text in ``node``: itself, or those in its containers, conditionals and calls'
    arguments (a label built from parts)."""
    text = _string(node)
    if text is not None:
        found = [text]
        if isinstance(node, ast.IfExp):
            found += _strings_in(node.orelse)
        return found
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [t for e in node.elts for t in _strings_in(e)]
    if isinstance(node, ast.Dict):  # values only: keys are lookups
        return [t for v in node.values for t in _strings_in(v)]
    if isinstance(node, ast.IfExp):
        return _strings_in(node.body) + _strings_in(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [t for v in node.values for t in _strings_in(v)]
    if isinstance(node, ast.Call) and _name(node.func) in ("join", "format", "wrap"):
        return [t for a in [*node.args, node.func] for t in _strings_in(a)]
    if isinstance(node, ast.Attribute):
        return _strings_in(node.value)
    return []


def _name(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _is_property(call: ast.Call) -> bool:
    return _name(call.func).endswith("Property")


def collect(path: Path) -> list[Text]:
    """The user-visible texts of one front-end module (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(REPO).as_posix()
    found: list[Text] = []

    def add(texts, node):
        for text in texts:
            if text.strip() and text.strip() != "{}":
                found.append(Text(text, f"{where}:{node.lineno}"))

    for node in tree.body:  # module constants
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        value = getattr(node, "value", None)
        if value and any(t.isupper() and t.lstrip("_") not in NOT_WORDS for t in targets):
            if any(t.endswith("_ITEMS") for t in targets) and isinstance(value, ast.List):
                # Blender enum items: (identifier, name, description); the name shows
                value = ast.List([ast.Tuple(e.elts[1:3]) for e in value.elts])
            add(_strings_in(value), node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names = {
                t.id
                for s in node.body
                if isinstance(s, ast.Assign)
                for t in s.targets
                if isinstance(t, ast.Name)
            }
            if "bl_idname" in names or "bl_label" in names:
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    add([doc], node)
                for s in node.body:
                    if isinstance(s, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id in ("bl_label", "bl_description")
                        for t in s.targets
                    ):
                        add(_strings_in(s.value), s)
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in SHOWING_CALLS or _is_property(node):
            args = [] if _is_property(node) else node.args[: WORD_ARGS.get(name)]
            add([t for a in args for t in _strings_in(a)], node)
            for kw in node.keywords:
                if kw.arg in SHOWING_KEYWORDS or (kw.arg == "items" and _is_property(node)):
                    add(_strings_in(kw.value), node)
        elif (
            name == "emit"
            and _name(getattr(node.func, "value", None)) in SHOWING_SIGNALS
            or name in ("append", "insert")
            and _name(getattr(node.func, "value", None))
            in (
                "notes",
                "messages",
            )
        ):
            add([t for a in node.args for t in _strings_in(a)], node)
    return found


def collect_front_end(folder: str, skip: tuple[str, ...] = ()) -> list[Text]:
    return [
        t
        for path in sorted((REPO / folder).glob("*.py"))
        if path.name not in skip
        for t in collect(path)
    ]


def protocol_texts(protocol) -> list[Text]:
    """What the shared protocol module puts on screen: presets, conventions, stages,
    error kinds and the glossary."""
    texts = [Text(p[k], "protocol.PRESETS") for p in protocol.PRESETS.values()
             for k in ("label", "description")]  # fmt: skip
    texts += [Text(m[k], "protocol.DEPTH_MODES") for m in protocol.DEPTH_MODES.values()
              for k in ("label", "description")]  # fmt: skip
    texts += [Text(s, "protocol.STAGES") for s in protocol.STAGES.values()]
    texts += [Text(s, "protocol.ERROR_KINDS") for s in protocol.ERROR_KINDS.values()]
    texts += [Text(s, "protocol.GLOSSARY") for s in protocol.GLOSSARY.values()]
    return texts


# ---------------------------------------------------------------------------- engine errors
ERROR_CLASS = re.compile(r"[A-Z]\w*(?:Error|Frames|Depth|Cancelled)$")


def engine_error_templates() -> list[tuple[str, str, str]]:
    """(class name, message template, file:line) of every error the engine raises with a
    literal message: what an engine error can say, for the front-ends' translations."""
    found = []
    for path in sorted((REPO / "rollingdepth_core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                continue
            name = _name(node.exc.func)
            if not ERROR_CLASS.match(name) or not node.exc.args:
                continue
            text = _string(node.exc.args[0])
            if text:
                where = f"{path.relative_to(REPO).as_posix()}:{node.lineno}"
                found.append((name, text.replace("{}", "x"), where))
    return found


def report(found: dict[str, list[str]]) -> str:
    """One readable list of findings, for an assertion message."""
    return "\n".join(f"{where}\n    " + "\n    ".join(why) for where, why in found.items())
