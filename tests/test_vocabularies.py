"""Vocabulary presets: one source (the benchmark class files), the class-box syntax, and the built-in union."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    VOCABULARY_PRESETS,
    InputError,
    VocabularyPreset,
    builtin_vocabulary,
    parse_classes,
    vocabulary_preset,
)
from scclip_core.eval import BENCHMARKS

COUNTS = {"coco_stuff": 171, "ade20k": 150, "pascal_context": 59, "pascal_voc": 20, "cityscapes": 19}


def test_presets_in_display_order_with_their_counts():
    assert [preset.key for preset in VOCABULARY_PRESETS] == list(COUNTS)
    for preset in VOCABULARY_PRESETS:
        assert len(preset.classes) == COUNTS[preset.key] == len(preset.names)
        assert preset.label == f"{preset.title} ({COUNTS[preset.key]})"


def test_presets_read_the_benchmark_class_files():
    for preset in VOCABULARY_PRESETS:
        assert preset.classes == BENCHMARKS[preset.class_list].queries
    voc = vocabulary_preset("pascal_voc")
    assert voc.classes[0] == ("aeroplane",)
    assert voc.classes[14][:2] == ("person", "person in shirt")


@pytest.mark.parametrize("preset", VOCABULARY_PRESETS, ids=lambda preset: preset.key)
@pytest.mark.parametrize("separator", ["\n", "; "])
def test_as_text_round_trips_through_parse_classes(preset, separator):
    text = preset.as_text(separator)
    assert parse_classes(text, background=None).classes == preset.classes
    with_background = parse_classes(text)
    assert with_background.classes[:-1] == preset.classes
    assert with_background.background_index == len(preset.classes)
    assert set(with_background.classes[-1]) <= set(DEFAULT_BACKGROUND_WORDS)


def test_as_text_syntax_and_separator_check():
    voc = vocabulary_preset("pascal_voc")
    assert voc.as_text().splitlines()[0] == "aeroplane"
    assert voc.as_text("; ").startswith("aeroplane; bicycle; bird; ")
    assert "person, person in shirt, person in jeans" in voc.as_text()
    with pytest.raises(InputError, match="separator"):
        voc.as_text(", ")


def test_no_background_entries():
    for preset in VOCABULARY_PRESETS:
        names = {name.lower() for synonyms in preset.classes for name in synonyms}
        assert "background" not in names
        assert parse_classes(preset.as_text(), background=None).background_index is None


def test_background_class_of_a_benchmark_is_left_out():
    with_background = VocabularyPreset("context60", "Pascal Context with background", "context60")
    assert BENCHMARKS["context60"].queries[0] == ("background",)
    assert with_background.classes == vocabulary_preset("pascal_context").classes


def test_lookup_is_forgiving_and_unknown_keys_list_the_valid_ones():
    assert vocabulary_preset("COCO-Stuff") is vocabulary_preset("coco_stuff")
    assert vocabulary_preset("voc20").key == "pascal_voc"
    with pytest.raises(InputError) as raised:
        vocabulary_preset("imagenet")
    message = str(raised.value)
    assert "'imagenet'" in message
    for key in COUNTS:
        assert key in message


def test_unknown_class_list_is_rejected():
    with pytest.raises(InputError, match="unknown class list 'not_a_dataset'; choose one of .*voc21"):
        VocabularyPreset("x", "X", "not_a_dataset")


def test_builtin_vocabulary_is_the_deduplicated_union_of_display_names():
    names = builtin_vocabulary()
    assert names is builtin_vocabulary()
    lowered = [name.lower() for name in names]
    assert len(lowered) == len(set(lowered))
    expected = []
    for preset in VOCABULARY_PRESETS:
        for name in preset.names:
            if name.lower() not in expected:
                expected.append(name.lower())
    assert lowered == expected
    assert names[:3] == vocabulary_preset("coco_stuff").names[:3]
    # Shared classes appear once, at their first preset; synonyms that are prompt variants are not names.
    assert lowered.count("person") == 1 and lowered.index("person") == 0
    assert "person in shirt" not in lowered and "tv monitor" not in lowered
    assert "television monitor" in lowered and "sidewalk" in lowered
    assert sum(len(preset.classes) for preset in VOCABULARY_PRESETS) > len(names) > 171


def test_importing_the_presets_does_not_load_torch():
    probe = "import sys, scclip_core.vocabularies as v; v.builtin_vocabulary(); print('torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "False"
