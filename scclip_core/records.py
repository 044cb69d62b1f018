"""Append-only JSON-lines record files: the resume state of `scclip segment` and `scclip eval`.

A process killed mid-write leaves a torn last line: reading skips it and opening for append cuts it off first, so
the next record starts on a line of its own. Any other line that is not a JSON object with the expected fields
(someone else's file, a hand edit) is skipped with a warning that names the file and line; the item it stood for
is simply done again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from .errors import InputError, output_errors

LOGGER = logging.getLogger(__name__)

Record = dict[str, Any]
FieldTypes = Mapping[str, type | tuple[type, ...]]


def _problem(record: object, fields: FieldTypes) -> str | None:
    """Why `record` is not a record with `fields` of their types, or None when it is."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for name, kind in fields.items():
        if name not in record:
            return f"no {name!r} field"
        value = record[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"{name!r} is {value!r}"
        if not isinstance(value, kind):
            return f"{name!r} is {type(value).__name__} {value!r}"
    return None


def read_records(path: Path, fields: FieldTypes, check: Callable[[Record], None] | None = None) -> list[Record]:
    """The records of `path` in file order (none when it is missing).

    Each must be a JSON object holding `fields` (name -> type; bool never counts as int) and pass `check`, which
    raises InputError for a record it cannot use. A torn last line is skipped silently, any other failing line
    with a warning.
    """
    if not path.is_file():
        return []
    try:
        data = path.read_bytes()
    except OSError as error:
        LOGGER.warning("%s cannot be read (%s); its items are done again", path, error)
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    torn = lines.pop()  # what follows the last newline: empty, or a line cut short by a killed writer
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            LOGGER.warning("%s line %d is not JSON (%s); skipped, its item is done again", path, number, error)
            continue
        problem = _problem(record, fields)
        if problem is None and check is not None:
            try:
                check(record)
            except InputError as error:
                problem = str(error)
        if problem is not None:
            LOGGER.warning(
                "%s line %d is not a record of this run (%s); skipped, its item is done again", path, number, problem
            )
            continue
        records.append(record)
    if torn.strip():
        LOGGER.info("%s ends in a torn line (a run stopped while writing); its item is done again", path)
    return records


def open_records(path: Path) -> TextIO:
    """`path` for appending records, cut back to its last complete line first (OutputError if it cannot be)."""
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                path.write_bytes(data[: data.rfind(b"\n") + 1])
        return path.open("a", encoding="utf-8")


def append_record(stream: TextIO, record: Mapping[str, object]) -> None:
    """Write one record as one line and flush it, so a killed process loses at most the line in flight."""
    with output_errors(stream.name):
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        stream.flush()
