"""Every text the add-on shows is in an artist's words: no flags, class names, commands or
engine jargon (tests/artist_words.py has the tells), tooltips without a docstring's line
breaks, and the method words that stay explained where they appear (protocol.GLOSSARY)."""

from __future__ import annotations

import importlib

import bpy
import pytest

from tests.artist_words import (
    collect_front_end,
    engine_error_templates,
    layout_tells,
    protocol_texts,
    report,
    tells,
)

HARD_TELLS = ("a command-line flag", "a class name", "a command", "an environment variable")


@pytest.fixture(scope="module")
def modules(addon):
    found = {
        name: importlib.import_module(f"{addon.__name__}.{name}")
        for name in ("engine", "protocol", "operators", "preferences")
    }
    return {**found, "addon": importlib.import_module(addon.__name__)}


def rna_texts(cls) -> list[tuple[str, str, bool]]:
    """(where, text, is a tooltip) of a registered class: its label and description, its
    properties' names and descriptions, their enum items'."""
    rna = cls.bl_rna
    if hasattr(cls, "bl_idname") and "_OT_" in cls.__name__:  # an operator's own properties
        category, name = cls.bl_idname.split(".")
        rna = getattr(getattr(bpy.ops, category), name).get_rna_type()
    found = [(cls.__name__, rna.name, False), (cls.__name__, rna.description, True)]
    for prop in rna.properties:
        if prop.identifier in ("rna_type", "bl_idname") or prop.is_hidden:
            continue
        where = f"{cls.__name__}.{prop.identifier}"
        found += [(where, prop.name, False), (where, prop.description, True)]
        for item in getattr(prop, "enum_items", []):
            found += [(where, item.name, False), (where, item.description, True)]
    return [(w, t, tip) for w, t, tip in found if t]


def registered_classes(modules):
    """Every class the add-on registers (its preferences, operators and panels)."""
    return list(modules["addon"].CLASSES)


def test_the_add_ons_own_words_have_no_tells(modules):
    texts = collect_front_end("blender_addon", skip=("protocol.py",))
    found = {str(t): tells(t.text) for t in texts + protocol_texts(modules["protocol"])}
    found = {where: why for where, why in found.items() if why}
    assert not found, "texts an artist reads, with words that are not theirs:\n" + report(found)


def test_every_registered_label_description_and_item(modules):
    found = {}
    for cls in registered_classes(modules):
        for where, text, tooltip in rna_texts(cls):
            why = tells(text) + (layout_tells(text) if tooltip else [])
            if why:
                found[f"{where}: {text!r}"] = why
    assert not found, report(found)
    # the checks above read real descriptions: the dialog's have them
    estimate = bpy.ops.sequencer.rollingdepth_estimate.get_rna_type()
    assert "\n" not in estimate.description and estimate.description.startswith("Estimate depth")
    for name in ("near", "far", "dilations", "holdout_strip", "restore_res"):
        assert estimate.properties[name].description, name


def test_blenders_spelling_and_plain_setting_names(modules):
    props = bpy.ops.sequencer.rollingdepth_estimate.get_rna_type().properties
    assert props["strip_colorspace"].name == "Strip Color Space"
    assert props["restore_res"].name == "Write at Plate Size"


def test_every_engine_error_reads_without_flags_commands_or_class_names(modules):
    engine, protocol = modules["engine"], modules["protocol"]
    templates = engine_error_templates()
    assert len(templates) > 200
    found = {}
    for cls, message, where in templates:
        kind = cls if cls in protocol.ERROR_KINDS else "ConfigError"
        text = engine.error_text({"kind": kind, "message": message})
        why = [t for t in tells(text) if t.split(":")[0] in HARD_TELLS]
        if why:
            found[f"{where}: {text!r}"] = why
    assert not found, report(found)


def test_errors_lead_with_their_kind_not_a_class_name(modules):
    engine, protocol = modules["engine"], modules["protocol"]
    for kind, lead in protocol.ERROR_KINDS.items():
        if kind in engine.OWN_KINDS:
            continue
        text = engine.error_text({"kind": kind, "message": "x"})
        assert text.startswith(lead) and kind not in text, text
    # the holdout movie on a sequence plate
    text = engine.error_text(
        {
            "kind": "ConfigError",
            "message": "/p/clip_notc.mp4: the movie has 24 frames (0-23), the plate 14; pass "
            "the matte as a sequence with `--holdout mattes.####.png`",
        }
    )
    assert "(ConfigError)" not in text and "--holdout" not in text
    assert "Holdout Matte in the Estimate Depth dialog" in text


def test_each_method_word_the_add_on_uses_is_explained(modules):
    texts = [t for cls in registered_classes(modules) for _, t, _ in rna_texts(cls)]
    texts += [t.text for t in collect_front_end("blender_addon", skip=("protocol.py",))]
    for word, explanation in modules["protocol"].GLOSSARY.items():
        if any(word in t.lower() for t in texts):
            assert any(explanation in t for t in texts), word


def test_a_repository_folder_finds_its_environment(modules, tmp_path):
    engine = modules["engine"]
    python = tmp_path / "repo" / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    assert engine.engine_command(str(tmp_path / "repo"))[0] == str(python)
    (tmp_path / "empty").mkdir()
    with pytest.raises(engine.EngineError) as refused:
        engine.engine_command(str(tmp_path / "empty"))
    assert str(tmp_path / "empty" / ".venv" / "bin" / "python") in str(refused.value)
    assert bpy.app.version >= (4, 2, 0)
