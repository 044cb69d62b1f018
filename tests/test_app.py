"""The Gradio app in process: gradio_client round trips on the tiny random model, bad input, weight failures,
and the cheap re-render paths (which must not touch the model)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from demo.events import Events
from demo.events.common import LOCAL_SESSION
from demo.events.rendering import RUN_FAILED
from demo.host import ModelHost
from demo.inputs import LIMITS
from demo.outputs import prune_share_links
from demo.ui import ASSETS_DIR, load_examples
from scclip_core import parse_classes
from scclip_core.scores import CompactScores
from tests.serving import FAST_CONFIG, serve

pytestmark = pytest.mark.timeout(180)


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` (no pixel data): enough for a size check, cheap to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def coco_label_maps(coco: dict, class_names: list[str]) -> dict[str, np.ndarray]:
    """Each image's label map as pycocotools decodes the COCO file (class index = position in `class_names`), by
    file name; a pixel no annotation covers stays -1."""
    index_of = {category["id"]: class_names.index(category["name"]) for category in coco["categories"]}
    maps = {}
    for image in coco["images"]:
        labels = np.full((image["height"], image["width"]), -1, dtype=np.int64)
        for annotation in coco["annotations"]:
            if annotation["image_id"] == image["id"]:
                mask = coco_mask.decode(annotation["segmentation"]).astype(bool)
                assert not np.any(labels[mask] >= 0), "no pixel in two annotations"
                assert int(mask.sum()) == annotation["area"]
                labels[mask] = index_of[annotation["category_id"]]
        maps[image["file_name"]] = labels
    return maps


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("app-images")
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :48] = (220, 30, 30)
    rgb[:, 48:] = (30, 30, 220)
    paths = {
        "rgb": folder / "halves.png",
        "other": folder / "other.jpg",
        "rgba": folder / "rgba.png",
        "gray16": folder / "gray16.png",
        "tiny": folder / "tiny.png",
        "not_image": folder / "notes.png",
    }
    Image.fromarray(rgb).save(paths["rgb"])
    Image.fromarray(rgb[::-1, ::-1].copy()).resize((80, 50)).save(paths["other"])
    Image.fromarray(np.dstack([rgb, np.full((64, 96), 128, np.uint8)])).save(paths["rgba"])
    Image.fromarray(np.linspace(0, 65535, 50 * 70).reshape(50, 70).astype(np.uint16)).save(paths["gray16"])
    Image.fromarray(rgb[:3, :2].copy()).save(paths["tiny"])
    paths["not_image"].write_text("this is not a picture")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated by 90 degrees
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    paths["rotated"] = folder / "rotated.jpg"
    Image.fromarray(np.tile(rgb, (2, 10, 1))[:120, :900].copy()).save(folder / "wide.png")
    paths["wide"] = folder / "wide.png"
    paths["huge"] = header_only_png(folder / "huge.png", 12000, 9000)
    return paths


@pytest.fixture(scope="module")
def client() -> Client:
    with serve("tiny-test", "random", FAST_CONFIG) as (_, url):
        yield Client(url, verbose=False)


def test_segment_returns_input_sized_label_png_and_json(client: Client, images: dict[str, Path]) -> None:
    label_path, summary = client.predict(
        handle_file(str(images["rgb"])),
        "red, crimson; blue",
        background_words="",
        prob_threshold=0.0,
        api_name="/segment",
    )
    label_map = Image.open(label_path)
    assert label_map.mode == "P" and label_map.size == (96, 64)
    labels = np.asarray(label_map)
    assert summary["classes"] == ["red", "blue"]
    assert set(np.unique(labels)) <= {0, 1}
    for entry in summary["legend"]:
        assert abs(np.mean(labels == entry["index"]) - entry["share"]) < 1e-6
    assert summary["untrained_weights"] is True and "UNTRAINED" in summary["warning"]
    assert "UNTRAINED" in Path(label_path).name
    assert summary["image_size"] == [96, 64]
    assert set(summary["timings"]) == {"queue", "text", "image", "prediction", "other", "total"}


def test_segment_defaults_add_the_background_class(client: Client, images: dict[str, Path]) -> None:
    _, summary = client.predict(handle_file(str(images["rgb"])), "red; blue", api_name="/segment")
    assert summary["classes"] == ["red", "blue", "background"]
    assert summary["background_index"] == 2
    assert summary["prob_threshold"] == 0.0, "untrained weights default to no threshold, so classes show"
    assert summary["description"] == "SC-CLIP, all five stages"


def test_the_coco_file_of_segment_is_its_label_png_also_after_rethreshold(
    client: Client, images: dict[str, Path]
) -> None:
    label_path, summary = client.predict(
        handle_file(str(images["wide"])), "red; blue", "sky, wall", 0.0, api_name="/segment"
    )
    assert "/coco" in summary["coco"] and "COCO masks" in summary["coco"]
    label_map = np.asarray(Image.open(label_path))
    assert label_map.shape == (120, 900), "processed at 512 px, scaled back up to the input size"
    coco = json.loads(Path(client.predict(api_name="/coco")).read_text())
    assert [image["file_name"] for image in coco["images"]] == [Path(label_path).name]
    assert np.array_equal(coco_label_maps(coco, summary["classes"])[Path(label_path).name], label_map)

    relabelled_path, relabelled = client.predict(1.0, 0.0, api_name="/rethreshold")
    coco = json.loads(Path(client.predict(api_name="/coco")).read_text())
    decoded = coco_label_maps(coco, relabelled["classes"])[Path(relabelled_path).name]
    assert np.array_equal(decoded, np.asarray(Image.open(relabelled_path))) and np.all(decoded == 2)


def test_segment_batch_through_gradio_client_reports_the_bad_file(client: Client, images: dict[str, Path]) -> None:
    files = [handle_file(str(images[name])) for name in ("rgb", "not_image", "other")]
    gallery, table, zip_path, status = client.predict(files, "red; blue", "", 0.0, api_name="/segment_batch")
    assert [item["caption"] for item in gallery] == ["halves.png", "other.jpg"] and "2 of 3" in status
    assert [row[0] for row in table["data"]] == ["halves.png", "notes.png", "other.jpg"]
    assert "could not read the file as an image" in table["data"][1][-1] and Path(zip_path).suffix == ".zip"


def test_coco_without_a_kept_result_says_to_run_segment(images: dict[str, Path]) -> None:
    events = Events(ModelHost("tiny-test", "random", config=FAST_CONFIG))
    with pytest.raises(gr.Error, match="/segment"):
        events.rendering.coco_api()


def test_same_image_reuses_the_image_side_within_a_session(client: Client, images: dict[str, Path]) -> None:
    _, first = client.predict(handle_file(str(images["other"])), "red; blue", "", 0.0, api_name="/segment")
    _, again = client.predict(handle_file(str(images["other"])), "red; green; blue", "", 0.0, api_name="/segment")
    _, changed = client.predict(handle_file(str(images["rgb"])), "red; blue", "", 0.0, api_name="/segment")
    assert (first["reused_image_side"], again["reused_image_side"], changed["reused_image_side"]) == (
        False,
        True,
        False,
    )
    assert again["classes"] == ["red", "green", "blue"]


@pytest.mark.parametrize(
    "name, size",
    [("rgba", (96, 64)), ("gray16", (70, 50)), ("tiny", (2, 3)), ("rotated", (64, 96)), ("wide", (900, 120))],
)
def test_odd_images_are_segmented_at_their_own_size(
    client: Client, images: dict[str, Path], name: str, size: tuple[int, int]
) -> None:
    label_path, summary = client.predict(handle_file(str(images[name])), "thing; stuff", "", 0.0, api_name="/segment")
    assert Image.open(label_path).size == size and summary["label_png_size"] == list(size)
    assert summary["image_size"][0] * size[1] == pytest.approx(summary["image_size"][1] * size[0], rel=0.02), (
        "the engine may downscale, but never changes the aspect ratio"
    )


@pytest.mark.parametrize(
    "image_key, classes, message",
    [
        ("rgb", "", "no classes"),
        ("rgb", ";".join(f"class {index}" for index in range(101)), "at most 100 per request"),
        ("rgb", ";".join(f"class {index}, alias {index}" for index in range(99)), "at most 200 per request"),
        ("not_image", "cat", "could not read the file as an image"),
        ("huge", "cat", "megapixels"),
    ],
)
def test_bad_input_arrives_as_an_error_with_its_message(
    client: Client, images: dict[str, Path], image_key: str, classes: str, message: str
) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(images[image_key])), classes, api_name="/segment")
    label_path, _ = client.predict(handle_file(str(images["rgb"])), "red; blue", api_name="/segment")
    assert Image.open(label_path).size == (96, 64), "the next request works"


def test_missing_image_is_reported(client: Client) -> None:
    with pytest.raises(AppError, match="no image"):
        client.predict(None, "cat", api_name="/segment")


def test_ablation_runs_every_configuration_from_one_shared_pass(client: Client, images: dict[str, Path]) -> None:
    gallery, table = client.predict(
        handle_file(str(images["rgb"])),
        "red; blue",
        background_words="",
        prob_threshold=0.0,
        templates="simple",
        comparisons=["naclip"],
        api_name="/ablation",
    )
    shared, *rows = table["data"]
    assert shared[0].startswith("shared pass") and shared[1] > 0 and shared[2] is None
    names = [row[0] for row in rows]
    assert names[0] == "SC-CLIP (full)" and len(names) == 1 + 5 + 2
    assert names[1] == "− anomaly resolution" and names[-2:] == ["CLIP (vanilla)", "NACLIP"]
    assert rows[0][2] == 100.0
    assert all(0.0 <= row[2] <= 100.0 and row[1] > 0 for row in rows)
    assert len(gallery) == len(names)
    assert all(item["caption"].startswith(name) for item, name in zip(gallery, names))
    assert Image.open(gallery[0]["image"]).size[0] > 0


def test_unavailable_weights_start_the_app_with_a_banner_and_a_clear_error(images: dict[str, Path]) -> None:
    with serve("tiny-test", "/nonexistent/weights.pt", FAST_CONFIG) as (demo, url):
        banner = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "status-banner")
        assert "could not be loaded" in banner.value and "/nonexistent/weights.pt" in banner.value
        assert "SCCLIP_WEIGHTS" in banner.value
        with pytest.raises(AppError, match="model is not available.*nonexistent"):
            Client(url, verbose=False).predict(handle_file(str(images["rgb"])), "cat", api_name="/segment")


def test_the_untrained_banner_suggests_the_models_own_weights(demo_host: ModelHost) -> None:
    banner = demo_host.banner_html()  # tiny-test has no pretrained weights at all
    assert "to a pretrained tag or a weight file" in banner and "SCCLIP_WEIGHTS=random" not in banner
    other = copy.copy(demo_host)
    other.model = dataclasses.replace(demo_host.model, name="ViT-H-14")  # an architecture without an openai tag
    assert "<code>SCCLIP_WEIGHTS=laion2b_s32b_b79k</code>" in other.banner_html()


def test_model_and_weights_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    monkeypatch.setenv("SCCLIP_MODEL", "tiny-test")
    monkeypatch.setenv("SCCLIP_WEIGHTS", "random")
    demo = app.build_demo(config=FAST_CONFIG)
    banner = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "status-banner")
    assert "Untrained weights" in banner.value
    arguments = app.parse_args(["--model", "ViT-L/14", "--weights", "x.pt", "--port", "7999"])
    assert (arguments.model, arguments.weights, arguments.port) == ("ViT-L/14", "x.pt", 7999)


def test_cheap_events_rerender_without_the_model(images: dict[str, Path]) -> None:
    host = ModelHost("tiny-test", "random", config=FAST_CONFIG)  # its model is taken away below
    events = Events(host)
    events.segmenting.segment(str(images["rgb"]), "red; blue", "sky, wall", 0.0, progress=None)
    host._segmenters.clear()  # from here on, any model call would fail
    kept = events.store.get(LOCAL_SESSION)
    assert isinstance(kept.segmentation.pixel_scores, CompactScores) and kept.segmentation.labels.dtype == np.uint8
    assert kept.scores.probs.dtype == np.float16 and kept.segmentation.probs.shape == kept.scores.probs.shape
    assert kept.segmentation.trace[0].mid_similarity.dtype == torch.float16

    shown = events.rendering.show_result(0.5)
    assert json.loads(Path(shown.summary_file).read_text())["classes"] == ["red", "blue", "background"]
    assert json.loads(Path(shown.coco_file).read_text())["images"][0]["file_name"] == Path(kept.label_path).name
    assert shown.overlay.size == (96, 64) and shown.legend.count('class="legend-entry"') == 3
    assert "SC-CLIP, all five stages" in shown.status and shown.point is None
    assert shown.hidden["choices"] == ["red", "blue"], "the background cannot be hidden: it is never tinted"
    hidden = events.rendering.rerender(0.5, ["red", "blue"])
    assert "(hidden)" in hidden.legend
    strip = np.asarray(hidden.overlay)[20:, :]
    assert np.array_equal(strip, np.asarray(Image.open(images["rgb"]).convert("RGB"))[20:, :]), (
        "with every class hidden, the photo shows (below the untrained-weights strip)"
    )

    relabelled = events.rendering.rethreshold(1.0, 0.0, 0.5, [])
    assert json.loads(Path(relabelled.summary_file).read_text()) == relabelled.summary_json
    assert relabelled.summary_json["shares"]["background"] == 1.0, (
        "a threshold of 1 sends every pixel to the background"
    )
    assert np.all(np.asarray(Image.open(relabelled.label_file)) == 2)
    relabelled_coco = json.loads(Path(relabelled.coco_file).read_text())
    assert {annotation["category_id"] for annotation in relabelled_coco["annotations"]} == {3}, (
        "after relabelling, the COCO download has the background alone (its category is last)"
    )
    updated = events.store.get(LOCAL_SESSION)
    assert updated.segmentation.rules.prob_threshold == 1.0 and updated.embedding is kept.embedding

    views = events.inside.patch_views((90, 10))
    pictures = [views.anomaly_click, views.anomaly_figure, views.attention_figure, views.similarity_click]
    assert all(isinstance(view, Image.Image) for view in [*pictures, views.similarity_figure])
    assert "x=90, y=10" in views.patch_message
    assert len(events.rendering.heatmaps()) == 3

    events.segmenting.forget()
    assert events.rendering.rerender(0.5, []).status.startswith("Your previous result is no longer kept")


def test_a_failed_run_clears_every_result_view(events: Events) -> None:
    cleared = events.rendering.clear_results()
    assert cleared.status == RUN_FAILED and cleared.hidden["choices"] == [] and cleared.hidden["value"] == []
    assert cleared.overlay is None and cleared.label_file is None and cleared.patch_message == ""
    assert cleared.coco_file is None
    assert not cleared.heatmap_gallery and cleared.anomaly_names == cleared.similarity_names == ""


def test_example_preview_renders_a_default_run(images: dict[str, Path], events: Events) -> None:
    overlay, legend, timings, label_path, summary, summary_path, status = events.segmenting.example_preview(
        str(images["rgb"]), "red; blue", "sky"
    )
    assert overlay.size == (96, 64) and legend.count('class="legend-entry"') == 3
    assert "prediction" in timings and "total" in timings and Image.open(label_path).size == (96, 64)
    assert summary["classes"] == ["red", "blue", "background"] and "Segment" in status


def test_examples_are_real_licensed_photos_with_suitable_classes() -> None:
    rows, titles = load_examples()
    attribution = (ASSETS_DIR / "ATTRIBUTION.md").read_text()
    assert len(rows) >= 6 and len(titles) == len(rows)
    for path, classes, _background in rows:
        image = Path(path)
        assert image.stat().st_size < 300_000 and image.name in attribution
        with Image.open(image) as picture:
            assert min(picture.size) >= 256
        assert len(parse_classes(classes, background=None).names) >= 3
    entries = json.loads((ASSETS_DIR / "examples.json").read_text())
    assert {entry["image"] for entry in entries} == {Path(row[0]).name for row in rows}


def test_the_public_api_names_only_the_documented_endpoints(client: Client) -> None:
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    public = {"/segment", "/ablation", "/rethreshold", "/model_info", "/coco", "/segment_batch", "/segment_video"}
    assert endpoints == public, "the page's own events (share link, tab tracking, slider, re-render) stay private"
    info = client.predict(api_name="/model_info")
    assert info["untrained_weights"] is True and "naclip" in info["methods"]
    assert info["stages"][0] == "anomaly" and info["limits"]["max_classes"] == 100
    assert info["limits"]["max_video_frames"] == LIMITS.max_video_frames and info["limits"]["live_side"] == 224
    assert info["limits"]["full_template_names"] == LIMITS.full_template_names == 100


class _Request:
    """A stand-in for gr.Request on page load: the page URL's query parameters."""

    def __init__(self, **query: str) -> None:
        self.query_params = query
        self.session_hash = "visitor"


def test_a_share_link_reruns_on_load_only_when_it_restored_an_image_and_classes(
    images: dict[str, Path], events: Events
) -> None:
    handlers = events.sharing
    image = {"path": str(images["rgb"]), "meta": {"_type": "gradio.FileData"}}
    token, tab = handlers.open_shared_link(image, "red; blue", "ablation", _Request(deep_link="abc"))
    assert isinstance(token, str) and len(token) == 32 and tab.selected == "ablation"
    again, _ = handlers.open_shared_link(image, "red; blue", "ablation", _Request(deep_link="abc"))
    assert again != token, "each opening starts its own run"
    for arguments in [(image, "red; blue", "segment", _Request()), (None, "", None, _Request())]:
        assert handlers.open_shared_link(*arguments) == (gr.skip(), gr.skip()), "a plain page load does nothing"
    token, tab = handlers.open_shared_link(None, "red", "heatmaps", _Request(deep_link="abc"))
    assert token == gr.skip() and tab.selected == "heatmaps", "without an image only the tab is restored"
    assert handlers.open_shared_link(image, "  ", None, _Request(deep_link="abc")) == (gr.skip(), gr.skip())


def test_the_run_a_share_link_starts_is_segment_with_its_limits(
    images: dict[str, Path], tmp_path: Path, events: Events
) -> None:
    handlers = events.sharing
    settings = ("", 0.0, "sc-clip", None, "lof", 0.4, 0.0, "simple", "default")
    _, summary = handlers.segment_shared(str(images["rgb"]), "red; blue", *settings, progress=None)
    assert summary["classes"] == ["red", "blue"] and events.store.get(LOCAL_SESSION) is not None
    too_many = ";".join(f"class {index}" for index in range(101))
    with pytest.raises(gr.Error, match="at most 100 per request"):
        handlers.segment_shared(str(images["rgb"]), too_many, *settings, progress=None)
    with pytest.raises(gr.Error, match="no longer on the server"):
        handlers.segment_shared(str(tmp_path / "deleted.png"), "red", *settings, progress=None)


def test_share_link_snapshots_are_deleted_once_their_images_are(tmp_path: Path) -> None:
    links = tmp_path / "deep_links"
    for name, age in [("old", 21 * 60), ("fresh", 60)]:
        (links / name).mkdir(parents=True)
        (links / name / "state.json").write_text("[]")
        stamp = time.time() - age
        os.utime(links / name, (stamp, stamp))
    assert prune_share_links(links) == 1
    assert [path.name for path in links.iterdir()] == ["fresh"]
    assert prune_share_links(tmp_path / "missing") == 0


def test_share_links_saved_by_an_older_page_get_the_components_they_lack(tmp_path: Path) -> None:
    from demo.outputs import complete_share_links

    page = [{"id": 1, "props": {"value": "new"}}, {"id": 2, "props": {"value": False}}]
    for name, saved in [("older", [{"id": 1, "props": {"value": True}}]), ("current", page)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text(json.dumps(saved))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{not json")
    assert complete_share_links(tmp_path, page) == 2, "the older and the current one can be opened"
    assert json.loads((tmp_path / "older" / "state.json").read_text()) == [
        {"id": 1, "props": {"value": True}},
        {"id": 2, "props": {"value": False}},
    ], "the saved values stay; only the missing component is added, with the page's default"
    assert json.loads((tmp_path / "current" / "state.json").read_text()) == page
    assert not (tmp_path / "broken").exists(), "a torn snapshot is deleted"
    assert complete_share_links(tmp_path / "missing", page) == 0


DAMAGED_SNAPSHOTS = {
    "torn": b'[{"id": 1, "pro',
    "garbage": bytes(range(256)),
    "empty": b"",
    "an-object": b'{"components": []}',
    "numbers": b"[1, 2, 3]",
    "null": b"null",
    "no-ids": b'[{"type": "textbox", "props": {}}]',
    "text-ids": b'[{"id": "1", "type": "textbox", "props": {}}]',
    "no-props": b'[{"id": 1, "type": "textbox", "props": "value"}]',
}


def test_a_damaged_share_link_opens_the_plain_page_and_the_app_keeps_serving(
    images: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Breaks: Gradio reads a share link's snapshot as it serves the page; a foreign one (valid JSON, not the page's
    components) failed the page with a 500. Expects: each damaged snapshot is deleted with a warning, the page and
    its config come back without the shared state (Gradio then says the link is not valid), and the app still
    segments."""
    from demo.outputs import share_links_folder

    with serve("tiny-test", "random", FAST_CONFIG) as (demo, url):
        folder = share_links_folder()
        for name, data in DAMAGED_SNAPSHOTS.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "state.json").write_bytes(data)
        (folder / "sound").mkdir(parents=True, exist_ok=True)
        (folder / "sound" / "state.json").write_text(json.dumps(demo.config["components"], default=str))
        with httpx.Client(timeout=60) as http:
            for name in [*DAMAGED_SNAPSHOTS, "sound"]:
                page = http.get(url, params={"deep_link": name})
                config = http.get(url + "config", params={"deep_link": name})
                assert page.status_code == config.status_code == 200, name
                expected = "valid" if name == "sound" else "invalid"
                assert config.json()["deep_link_state"] == expected, name
                assert (folder / name).exists() == (name == "sound"), name
        warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
        assert sum("deleted the share-link snapshot" in message for message in warnings) == len(DAMAGED_SNAPSHOTS)
        label_path, _ = Client(url, verbose=False).predict(handle_file(str(images["rgb"])), "red", api_name="/segment")
        assert Image.open(label_path).size == (96, 64)


def test_the_shared_view_keeps_its_hidden_classes(images: dict[str, Path], events: Events) -> None:
    events.segmenting.segment(str(images["rgb"]), "red; blue", "", 0.0, progress=None)
    shown = events.rendering.show_shared(0.5, ["blue", "gone"])
    assert shown.hidden["value"] == ["blue"] and "(hidden)" in shown.legend
    assert shown.status.startswith("**Opened from a shared link: SC-CLIP, all five stages.**")
    assert events.rendering.show_result(0.5).hidden["value"] == [], "a new run of one's own shows every class"


def test_the_slider_compares_two_ablation_configurations_from_the_gallery_files(
    images: dict[str, Path], tmp_path: Path, events: Events
) -> None:
    handlers = events.comparing
    pictures, _ = handlers.ablate(str(images["wide"]), "red; blue", "", 0.0, comparisons=["naclip"], progress=None)
    gallery = []  # as Gradio hands the gallery back to an event: (file path, caption) pairs
    for index, (picture, caption) in enumerate(pictures):
        picture.save(tmp_path / f"{index}.png")
        gallery.append((str(tmp_path / f"{index}.png"), caption))
    assert len(events.store) == 0, "the slider keeps nothing on the server: it reads the gallery's own files"

    left, right, slider, message = handlers.comparison_choices(gallery)
    names = [name for name, _ in left["choices"]]
    assert names[0] == "SC-CLIP (full)" and names[-2:] == ["CLIP (vanilla)", "NACLIP"] and len(names) == 8
    assert (left["value"], right["value"]) == (6, 0), "vanilla CLIP before, full SC-CLIP after"
    assert slider == (gallery[6][0], gallery[0][0]) and "Left: **CLIP (vanilla)" in message

    slider, message = handlers.compare(gallery, 1, 7)
    assert slider == (gallery[1][0], gallery[7][0])
    assert "− anomaly resolution" in message and "NACLIP" in message
    sizes = {Image.open(path).size for path in slider}
    assert sizes == {pictures[0][0].size} and max(pictures[0][0].size) <= 480, "preview size, as predicted"
    assert (
        handlers.compare(gallery, 1, 8).compare_slider is None
        and handlers.compare(gallery, None, 2).compare_slider is None
    )
    assert handlers.compare(None, 0, 1).compare_message.startswith("Run the ablation first")
    empty_left, _, no_slider, _ = handlers.comparison_choices(None)
    assert empty_left["choices"] == [] and no_slider is None


@pytest.mark.parametrize(
    ("method", "keywords", "ran"),
    [
        ("resclip", {}, []),
        ("pearl", {}, ["tlp"]),
        ("pearl", {"refine": "none"}, []),
        ("resclip", {"refine_edges": True}, ["pamr"]),
    ],
)
def test_the_new_methods_and_refinements_through_gradio_client(
    client: Client, images: dict[str, Path], method: str, keywords: dict[str, object], ran: list[str]
) -> None:
    label_png, summary = client.predict(
        handle_file(str(images["rgb"])),
        "red; blue",
        background_words="",
        prob_threshold=0.0,
        method=method,
        api_name="/segment",
        **keywords,
    )
    assert summary["method"] == method and summary["refine"] == ran
    assert Image.open(label_png).size == (96, 64) and summary["classes"] == ["red", "blue"]
    info = client.predict(api_name="/model_info")
    assert info["methods"][-2:] == ["resclip", "pearl"] and list(info["refine"]) == ["default", "none", "pamr", "tlp"]


def test_the_ablation_shows_resclips_own_stages_when_both_new_methods_are_ticked(
    client: Client, images: dict[str, Path]
) -> None:
    gallery, table = client.predict(
        handle_file(str(images["rgb"])),
        "red; blue",
        background_words="",
        prob_threshold=0.0,
        templates="simple",
        comparisons=["resclip", "pearl"],
        api_name="/ablation",
    )
    names = [row[0] for row in table["data"][1:]]
    assert names[-4:] == ["ResCLIP", "ResCLIP (RCS off)", "ResCLIP (SFR off)", "PEARL"] and len(names) == 6 + 1 + 4
    assert all(item["caption"].startswith(name) for item, name in zip(gallery, names))


def test_the_ablation_runs_each_method_with_the_refine_choice_from_one_shared_pass(
    images: dict[str, Path], demo_host: ModelHost
) -> None:
    from demo.ablation import ablation_configurations
    from demo.host import run_ablation
    from demo.inputs import load_image, parse_settings, parse_vocabulary

    rgb = load_image(str(images["rgb"]), None)
    configurations = ablation_configurations(["resclip", "pearl"])
    for refine, pearl in [("default", ("tlp",)), ("none", ()), ("pamr", ("pamr",))]:
        settings = parse_settings(None, None, None, None, "", 0.0, None, "simple", False, refine)
        shared, runs = run_ablation(
            demo_host, rgb, parse_vocabulary("red; blue", settings), settings, configurations, progress=None
        )
        ran = {run.name: run.segmentation.refinements for run in runs}
        assert ran["PEARL"] == pearl and ran["ResCLIP (SFR off)"] == ran["SC-CLIP (full)"]
        assert ran["ResCLIP"] == (() if refine == "default" else pearl)
        assert shared > 0 and len({run.segmentation.timings["backbone_shared"] for run in runs}) == 1


def test_the_page_lists_every_registered_method_and_refine_choice(demo_host: ModelHost) -> None:
    from demo.labels import COMPARISON_METHODS, DEFAULT_COMPARISONS, REFINE_CHOICES
    from demo.ui import build_interface
    from scclip_core import METHODS

    demo = build_interface(demo_host)
    by_id = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    assert [value for _, value in by_id["method"].choices] == list(METHODS)
    assert [value for _, value in by_id["comparisons"].choices] == list(COMPARISON_METHODS)
    assert by_id["comparisons"].value == list(DEFAULT_COMPARISONS)
    assert "pearl" in DEFAULT_COMPARISONS and "resclip" not in DEFAULT_COMPARISONS
    assert [value for _, value in by_id["refine"].choices] == list(REFINE_CHOICES) and by_id[
        "refine"
    ].value == "default"
    assert by_id["refine-edges"].visible is False, "the older switch stays in the API only"
    assert "this project's own ablation" in by_id["ablation-about"].value


def test_the_refine_choice_round_trips_through_a_share_link(images: dict[str, Path], events: Events) -> None:
    handlers = events.sharing
    settings = ["", 0.0, "pearl", None, "lof", 0.4, 0.0, "simple"]
    for shared, ran in [("none", []), ("tlp", ["tlp"]), ("default", ["tlp"]), (True, ["pamr"]), (False, ["tlp"])]:
        _, summary = handlers.segment_shared(str(images["rgb"]), "red; blue", *settings, shared, progress=None)
        assert summary["refine"] == ran, f"a link holding {shared!r}"
    shown = events.rendering.show_shared(0.5, [])
    assert shown.status.startswith("**Opened from a shared link: PEARL, logits refined by TLP.**"), "False: its own"
