"""The one resume-record store: torn, foreign and mistyped lines are skipped or refused, never a crash."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from scclip_core import InputError
from scclip_core.cli import SUMMARY_NAME, merge_summaries
from scclip_core.errors import OutputError
from scclip_core.eval.runner import RecordStore
from scclip_core.records import append_record, open_records, read_records

FIELDS = {"id": str, "count": int}


def test_records_round_trip_and_a_missing_file_has_none(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "records.jsonl"
    assert read_records(path, FIELDS) == []
    with open_records(path) as stream:
        append_record(stream, {"id": "a", "count": 1})
        append_record(stream, {"id": "b", "count": 2, "extra": [1]})
    assert read_records(path, FIELDS) == [{"id": "a", "count": 1}, {"id": "b", "count": 2, "extra": [1]}]


def test_a_torn_last_line_is_skipped_quietly_and_cut_before_appending(tmp_path: Path, caplog) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "count": 1}\n{"id": "b", "co')
    with caplog.at_level(logging.WARNING):
        assert read_records(path, FIELDS) == [{"id": "a", "count": 1}]
    assert not caplog.records
    with open_records(path) as stream:
        append_record(stream, {"id": "c", "count": 3})
    assert [record["id"] for record in read_records(path, FIELDS)] == ["a", "c"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("not json at all", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"count": 1}', "no 'id' field"),
        ('{"id": 7, "count": 1}', "'id' is int 7"),
        ('{"id": "x", "count": "1"}', "'count' is str '1'"),
        ('{"id": "x", "count": true}', "'count' is True"),
    ],
)
def test_garbage_and_mistyped_lines_are_skipped_with_a_warning(tmp_path: Path, caplog, line: str, reason: str) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(f'{{"id": "a", "count": 1}}\n{line}\n{{"id": "b", "count": 2}}\n')
    with caplog.at_level(logging.WARNING):
        assert [record["id"] for record in read_records(path, FIELDS)] == ["a", "b"]
    (warning,) = caplog.records
    assert f"{path} line 2" in warning.getMessage() and reason in warning.getMessage()


def test_eval_records_with_bad_cells_are_redone_and_foreign_ones_refused(tmp_path: Path, caplog) -> None:
    store = RecordStore(tmp_path, num_classes=3)
    with store.open_for_rank(0) as stream:
        RecordStore.append(stream, "good", np.eye(3, dtype=np.int64), 0.1)
        append_record(stream, {"id": "bad", "num_classes": 3, "confusion": [[0, 5, 1]]})
        append_record(stream, {"id": "odd", "num_classes": 3, "confusion": [[0, 1]]})
    with caplog.at_level(logging.WARNING):
        loaded = store.load()
    assert list(loaded) == ["good"] and np.array_equal(loaded["good"], np.eye(3))
    assert len(caplog.records) == 2 and "[0, 5, 1]" in caplog.records[0].getMessage()
    with pytest.raises(InputError, match="records for 3 classes, not 21; use a fresh output folder"):
        RecordStore(tmp_path, num_classes=21).load()


def test_segment_summaries_merge_past_garbage_lines(tmp_path: Path) -> None:
    images = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    done, error = (
        json.dumps({"image": str(images[0]), "status": "done"}),
        json.dumps({"image": str(images[1]), "status": "error"}),
    )
    (tmp_path / SUMMARY_NAME).write_text(f"{done}\nrubbish\n")
    (tmp_path / f"{SUMMARY_NAME}.rank0").write_text(f'{{"image": 3}}\n{error}\n{{"ima')
    summary = merge_summaries(tmp_path, images, skipped={images[2]})
    records = [json.loads(line) for line in summary.read_text().splitlines()]
    assert [(record["image"], record["status"]) for record in records] == [
        (str(images[0]), "done"),
        (str(images[1]), "error"),
        (str(images[2]), "skipped"),
    ]
    assert not list(tmp_path.glob(f"{SUMMARY_NAME}.rank*"))


def test_a_records_file_that_cannot_be_written_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=f"could not write {blocker / 'records.jsonl'}"):
        open_records(blocker / "records.jsonl")
