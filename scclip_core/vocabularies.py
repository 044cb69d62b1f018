"""Class lists: the packaged class files, their reader, and the named vocabularies built from them.

`classes/<name>.txt` holds one class per line with comma-separated synonyms; the benchmarks
(`scclip_core.eval`) evaluate with these files, and the vocabulary presets of the demo's dropdown read the same
files, so every list has one source. Vocabulary presets hold the object classes only; a list's background class
is left out, since the demo adds its own background words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import InputError

CLASSES_DIR = Path(__file__).with_name("classes")
BACKGROUND_NAME = "background"

CLASS_SEPARATORS: tuple[str, ...] = ("\n", "; ")
_RESERVED = (",", ";", "\n", "\r")


def display_names(classes: Sequence[Sequence[str]], background_index: int | None) -> list[str]:
    """One name per class for legends and reports: its first synonym, or `BACKGROUND_NAME` for the background."""
    return [BACKGROUND_NAME if index == background_index else synonyms[0] for index, synonyms in enumerate(classes)]


def class_list_names() -> list[str]:
    """The packaged class lists, by file name without `.txt`."""
    return sorted(path.stem for path in CLASSES_DIR.glob("*.txt"))


def read_class_list(name: str) -> tuple[tuple[str, ...], ...]:
    """A packaged class list by name (`voc21`, `ade20k`, ...): synonyms per class, in label order."""
    path = CLASSES_DIR / f"{name}.txt"
    if name not in class_list_names():
        raise InputError(f"unknown class list {name!r}; choose one of {', '.join(class_list_names())}")
    return read_class_file(path)


@cache
def read_class_file(path: Path) -> tuple[tuple[str, ...], ...]:
    """Parse a class file: one class per line, synonyms separated by commas; blank lines are skipped."""
    classes = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        synonyms = tuple(word.strip() for word in line.split(","))
        if not all(synonyms):
            raise InputError(f"{path}:{line_number}: empty synonym in {line!r}")
        classes.append(synonyms)
    if not classes:
        raise InputError(f"{path} lists no classes")
    return tuple(classes)


@dataclass(frozen=True)
class VocabularyPreset:
    """A named vocabulary: `class_list` names the packaged class list it reads (see `read_class_list`)."""

    key: str
    title: str
    class_list: str

    def __post_init__(self) -> None:
        read_class_list(self.class_list)

    @property
    def classes(self) -> tuple[tuple[str, ...], ...]:
        """Synonyms per class in the class list's order, without its background class."""
        classes = tuple(
            synonyms for synonyms in read_class_list(self.class_list) if synonyms[0].lower() != BACKGROUND_NAME
        )
        for synonyms in classes:
            for name in synonyms:
                if any(mark in name for mark in _RESERVED) or name != " ".join(name.split()):
                    raise InputError(
                        f"{self.class_list}: class name {name!r} cannot be written in the class-box syntax"
                    )
        return classes

    @property
    def names(self) -> tuple[str, ...]:
        """The display name (first synonym) of each class."""
        return tuple(synonyms[0] for synonyms in self.classes)

    @property
    def label(self) -> str:
        """Title and class count, for a dropdown: 'COCO-Stuff (171)'."""
        return f"{self.title} ({len(self.classes)})"

    def as_text(self, separator: str = "\n") -> str:
        """The classes in the class-box syntax of `parse_classes`: `separator` between classes, ', ' between
        synonyms. `separator` is a new line (one class per line) or '; '."""
        if separator not in CLASS_SEPARATORS:
            raise InputError(f"separator must be one of {list(CLASS_SEPARATORS)}, not {separator!r}")
        return separator.join(", ".join(synonyms) for synonyms in self.classes)


VOCABULARY_PRESETS: tuple[VocabularyPreset, ...] = (
    VocabularyPreset("coco_stuff", "COCO-Stuff", "coco_stuff164k"),
    VocabularyPreset("ade20k", "ADE20K", "ade20k"),
    VocabularyPreset("pascal_context", "Pascal Context", "context59"),
    VocabularyPreset("pascal_voc", "Pascal VOC", "voc20"),
    VocabularyPreset("cityscapes", "Cityscapes", "cityscapes"),
)


def vocabulary_preset(key: str) -> VocabularyPreset:
    """The preset for `key` (any case, dashes or underscores; its class list's name works too)."""
    wanted = str(key).strip().lower().replace("-", "_").replace(" ", "_")
    for preset in VOCABULARY_PRESETS:
        if wanted in (preset.key, preset.class_list):
            return preset
    raise InputError(
        f"unknown vocabulary preset {key!r}; choose one of {', '.join(preset.key for preset in VOCABULARY_PRESETS)}"
    )


@cache
def builtin_vocabulary() -> tuple[str, ...]:
    """The union of the presets' class names: each class's display name (first synonym), once (compared
    without case), in preset then class order.

    Only display names: the other synonyms are mostly prompt variants ('person in shirt') or near-duplicates
    ('tv monitor', 'monitor') that would crowd a short list of what a patch looks like.
    """
    names: dict[str, str] = {}
    for preset in VOCABULARY_PRESETS:
        for name in preset.names:
            names.setdefault(name.lower(), name)
    return tuple(names.values())


@cache
def preset_queries() -> tuple[str, ...]:
    """Every name the presets use as a text query (synonyms too), once, in preset then class order: what a service
    can embed once at start-up so that picking a preset costs no text encoding."""
    names = (name for preset in VOCABULARY_PRESETS for synonyms in preset.classes for name in synonyms)
    return tuple(dict.fromkeys(names))
