"""The app in a real browser: Debian's Chromium driven by Playwright (no `playwright install`).

Uploads a photo, types classes, segments, checks the overlay and one legend entry per class, opens every
inside-view tab and checks its figure rendered, picks a patch by clicking, runs the ablation with NACLIP, ResCLIP
and PEARL ticked (ResCLIP's own ablation included) and compares two of its configurations in the slider, then
ResCLIP with SC-CLIP, checks that bad input shows its message in the page, opens a share link (refine choice:
TLP) in a second browser, streams Chromium's fake camera to the Live tab, and saves screenshots to
$SCCLIP_ARTIFACTS (default tests/artifacts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from demo.inputs import LIMITS
from demo.outputs import complete_share_links, share_links_folder
from tests.browser import (
    CHROMIUM,
    FAKE_CAMERA_FLAGS,
    INSIDE_TABS,
    RUN_TIMEOUT_MS,
    VIEWPORT,
    browser_page,
    click_image_at,
    image_loaded,
    open_tab,
    segment_batch_in_page,
    segment_in_page,
    segment_video_in_page,
    stream_fake_camera,
    wait_for_image,
    wait_for_live_frames,
    write_batch_images,
)
from tests.serving import FAST_CONFIG, serve

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SCCLIP_ARTIFACTS", ROOT / "tests" / "artifacts"))
CLASSES = ["person", "flag", "space shuttle", "helmet"]


@pytest.fixture(scope="module")
def page():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        serve("tiny-test", "random", FAST_CONFIG) as (demo, url),
        sync_api.sync_playwright() as playwright,
        browser_page(playwright) as browser_tab,
    ):
        browser_tab.app_url = url
        browser_tab.demo = demo
        browser_tab.playwright = playwright
        yield browser_tab


def test_segment_then_look_inside_every_tab(page) -> None:
    entries = segment_in_page(
        page, page.app_url, ROOT / "assets" / "astronaut.jpg", "; ".join(CLASSES), background="", threshold=0
    )
    legend_names = page.locator("#legend .legend-entry").evaluate_all("els => els.map(e => e.dataset.class)")
    assert entries == len(CLASSES) and sorted(legend_names) == sorted(CLASSES), (legend_names, summary_settings(page))
    assert image_loaded(page, "#overlay")
    assert "UNTRAINED" in page.locator("#legend").inner_text()
    assert page.locator("#banner-untrained").is_visible()
    page.screenshot(path=str(ARTIFACTS / "segment.png"))

    for tab, selectors in INSIDE_TABS.items():
        open_tab(page, tab)
        for selector in selectors:
            wait_for_image(page, selector, timeout_ms=30_000)
            assert page.locator(selector).is_visible()
        page.screenshot(path=str(ARTIFACTS / f"tab-{tab.lower().replace(' ', '-')}.png"))
    assert page.locator("#heatmaps img").count() >= len(CLASSES)

    open_tab(page, "Anomalies")
    assert "row 7, column 7" in page.locator("#patch-message").inner_text(), "the default patch is the centre"
    click_image_at(page, "#anomaly-click", 0.03, 0.03)
    page.locator("#patch-message").get_by_text("row 0, column 0").wait_for(timeout=30_000)
    assert "Patch 0 " in page.locator("#patch-message").inner_text()


def summary_settings(page) -> str:
    """The settings the server reports it used, for an assertion's message."""
    return page.locator("#summary").inner_text()[:600]


def _fully_visible(page, selector: str) -> list[str]:
    """Texts of the elements under `selector` that are cut off (ellipsis, clipped or past the viewport's edge)."""
    return page.eval_on_selector_all(
        selector,
        """els => els.filter(el => {
               const box = el.getBoundingClientRect();
               return el.scrollWidth > el.clientWidth + 1 || box.right > window.innerWidth + 1 || box.width === 0;
           }).map(el => el.textContent)""",
    )


TICKED = ["NACLIP", "ResCLIP", "PEARL"]
ABLATION_CONFIGURATIONS = 6 + 1 + 1 + 3 + 1  # SC-CLIP and its stages off, CLIP, NACLIP, ResCLIP and its own, PEARL


def test_ablation_tab_shows_every_configuration_readably(page) -> None:
    open_tab(page, "Ablation")
    comparisons = page.locator("#comparisons")
    for box in comparisons.get_by_role("checkbox").all():
        box.uncheck()
    for name in TICKED:
        comparisons.get_by_label(name, exact=True).check()
    assert "this project's own ablation" in page.locator("#ablation-about").inner_text()
    page.locator("#run-ablation").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('#ablation-gallery img').length === {ABLATION_CONFIGURATIONS}",
        timeout=120_000,
    )
    table = page.locator("#ablation-table")
    assert "− anomaly resolution" in table.inner_text() and "shared" in table.inner_text()
    for name in ["ResCLIP (RCS off)", "ResCLIP (SFR off)", "PEARL"]:
        assert name in table.inner_text(), f"{name} in the ablation"
    page.screenshot(path=str(ARTIFACTS / "ablation.png"), full_page=True)
    for width in (1440, 390):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        assert not _fully_visible(page, "#ablation-gallery .caption-label"), f"captions cut at {width} px"
        assert not _fully_visible(page, "#ablation-table th"), f"table headers cut at {width} px"
    page.screenshot(path=str(ARTIFACTS / "ablation-phone.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)


def _natural_sizes(page, selector: str) -> list[list[int]]:
    return page.eval_on_selector_all(selector, "els => els.map(img => [img.naturalWidth, img.naturalHeight])")


def _file_names(page, selector: str) -> list[str]:
    """The served files behind the images (the part of each URL after `file=`)."""
    return page.eval_on_selector_all(selector, "els => els.map(img => img.src.split('file=').pop())")


def _choose(page, dropdown: str, option: str) -> None:
    """Pick an option of a dropdown in the Ablation tab (brought back to the front first if another tab is)."""
    if not page.locator(f"{dropdown} input").is_visible():
        open_tab(page, "Ablation")
    field = page.locator(f"{dropdown} input")
    field.click()
    options = page.locator(f"#{field.get_attribute('aria-controls')}")  # this dropdown's list, not another's
    options.get_by_role("option", name=option, exact=True).click()


def test_the_slider_compares_any_two_ablation_configurations(page) -> None:
    open_tab(page, "Ablation")
    assert page.locator("#ablation-gallery img").count() == ABLATION_CONFIGURATIONS, "the ablation above is on screen"
    page.wait_for_function("() => document.querySelectorAll('#compare-slider img').length === 2", timeout=30_000)
    wait_for_image(page, "#compare-slider")
    message = page.locator("#compare-message")
    assert "Left: CLIP (vanilla)" in message.inner_text() and "Right: SC-CLIP (full)" in message.inner_text()

    _choose(page, "#compare-left", "− anomaly resolution")
    _choose(page, "#compare-right", "NACLIP")
    message.get_by_text("NACLIP").wait_for(timeout=30_000)
    assert "Left: − anomaly resolution" in message.inner_text()
    page.wait_for_function(
        """() => { const imgs = Array.from(document.querySelectorAll('#compare-slider img'));
                   return imgs.length === 2 && imgs.every(img => img.complete && img.naturalWidth > 0); }""",
        timeout=30_000,
    )
    gallery_files = _file_names(page, "#ablation-gallery img")
    captions = page.locator("#ablation-gallery .caption-label").all_inner_texts()
    left = next(i for i, caption in enumerate(captions) if caption.startswith("− anomaly resolution"))
    right = next(i for i, caption in enumerate(captions) if caption.startswith("NACLIP"))
    page.wait_for_function(
        "files => { const shown = Array.from(document.querySelectorAll('#compare-slider img'))"
        ".map(img => img.src.split('file=').pop()); return files.every(f => shown.includes(f)); }",
        arg=[gallery_files[left], gallery_files[right]],
        timeout=30_000,
    )
    _choose(page, "#compare-left", "ResCLIP")
    _choose(page, "#compare-right", "SC-CLIP (full)")
    message.get_by_text("Right: SC-CLIP (full)").wait_for(timeout=30_000)
    assert "Left: ResCLIP ·" in message.inner_text(), "the new method against SC-CLIP"
    resclip = next(i for i, caption in enumerate(captions) if caption.startswith("ResCLIP ·"))
    page.wait_for_function(
        "files => { const shown = Array.from(document.querySelectorAll('#compare-slider img'))"
        ".map(img => img.src.split('file=').pop()); return files.every(f => shown.includes(f)); }",
        arg=[gallery_files[resclip], gallery_files[0]],
        timeout=30_000,
    )
    gallery_size = _natural_sizes(page, "#ablation-gallery img")[0]
    assert _natural_sizes(page, "#compare-slider img") == [gallery_size, gallery_size]
    assert max(gallery_size) == 480, "the overlays at the ablation's preview size (long side 480 px), not thumbnails"
    page.screenshot(path=str(ARTIFACTS / "ablation-slider.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 1000})
    page.wait_for_timeout(500)
    box = page.locator("#compare-slider").bounding_box()
    assert box["width"] > 300 and box["x"] >= 0 and box["x"] + box["width"] <= 391, "the slider fits a phone"
    page.set_viewport_size(VIEWPORT)


def test_the_legend_reads_on_a_phone(page) -> None:
    page.set_viewport_size({"width": 390, "height": 900})
    open_tab(page, "Segment")
    page.wait_for_timeout(500)
    names = page.locator("#legend .legend-entry > span:nth-child(2)")
    assert names.count() == len(CLASSES)
    assert not _fully_visible(page, "#legend .legend-entry > span:nth-child(2)")
    bars = page.eval_on_selector_all(
        "#legend .legend-entry > span:nth-child(3)", "els => els.map(el => el.getBoundingClientRect().width)"
    )
    assert min(bars) >= 40, "every share bar keeps a visible track"
    page.screenshot(path=str(ARTIFACTS / "segment-phone.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)


def test_a_failed_run_clears_the_results_and_says_so(page) -> None:
    open_tab(page, "Segment")
    assert image_loaded(page, "#overlay"), "a result from the first test is on screen"
    page.locator("#classes textarea").fill("")
    page.locator("#run").click()
    page.get_by_text("no classes given").first.wait_for(timeout=30_000)
    page.locator("#run-status").get_by_text("The run failed").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#legend .legend-entry').length === 0", timeout=30_000)
    assert not image_loaded(page, "#overlay")
    assert "Done" not in page.locator("#run-status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "error.png"))


def test_a_vocabulary_preset_fills_the_box_and_a_patch_gets_names(page) -> None:
    page.goto(page.app_url)
    page.locator("#vocabulary-preset input").click()
    page.get_by_role("option", name="Pascal VOC (20)").click()
    box = page.locator("#classes textarea")
    page.wait_for_function(
        "() => document.querySelector('#classes textarea').value.startsWith('aeroplane; bicycle')", timeout=30_000
    )
    assert box.input_value().count(";") == 19
    box.press("End")
    box.type("; kite")
    page.wait_for_function(
        "() => document.querySelector('#vocabulary-preset input').value === 'my classes'", timeout=30_000
    )

    segment_in_page(page, page.app_url, ROOT / "assets" / "astronaut.jpg", "person; flag; helmet", background="")
    open_tab(page, "Anomalies")
    names = page.locator("#anomaly-patch-names .patch-names-calibrated li")
    for _ in range(6):
        click_image_at(page, "#anomaly-click", 0.5, 0.3)
        try:
            names.first.wait_for(timeout=10_000)
            break
        except sync_api.TimeoutError:
            assert "still being embedded" in page.locator("#anomaly-patch-names").inner_text()
    assert names.count() == 10
    assert page.locator("#anomaly-patch-names .patch-names-vanilla li").count() == 10
    page.screenshot(path=str(ARTIFACTS / "patch-names.png"), full_page=True)


def _legend(page) -> list[list[str]]:
    """Each legend row's class name and share, as shown."""
    return page.locator("#legend .legend-entry").evaluate_all(
        "els => els.map(el => [el.dataset.class, el.lastElementChild.textContent])"
    )


def _copied_link(page) -> str:
    """The share link the button put on the clipboard (it arrives once the server has saved the snapshot)."""
    for _ in range(100):
        link = page.evaluate("navigator.clipboard.readText()")
        if "deep_link=" in link:
            return link
        page.wait_for_timeout(100)
    raise AssertionError(f"no share link on the clipboard: {link!r}")


def test_a_share_link_gives_another_visitor_the_same_view_and_legend(page) -> None:
    segment_in_page(page, page.app_url, ROOT / "assets" / "astronaut.jpg", "; ".join(CLASSES), background="")
    page.locator("#method-accordion").get_by_text("Method and stages (ablate)").click()
    page.locator("#stages").get_by_label("multi-level fusion").uncheck()
    page.locator("#refine").get_by_label("TLP", exact=True).check()
    page.locator("#run").click()
    page.locator("#run-status").get_by_text("without multi-level fusion, logits refined by TLP").wait_for(
        timeout=RUN_TIMEOUT_MS
    )
    page.locator("#threshold input[type=number]").fill("0.2")
    page.locator("#threshold input[type=number]").press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('#legend .legend-entry').length === 5", timeout=30_000
    )  # a threshold above 0 adds the background class
    open_tab(page, "Heatmaps")
    wait_for_image(page, "#heatmaps", timeout_ms=30_000)
    legend = _legend(page)

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#share-row button").click()
    link = _copied_link(page)
    assert link.startswith(page.app_url) and "deep_link=" in link

    with browser_page(page.playwright) as visitor:  # a second browser: another session, nothing kept for it yet
        visitor.goto(link)
        visitor.locator("#run-status").get_by_text("Opened from a shared link").wait_for(timeout=RUN_TIMEOUT_MS)
        assert "without multi-level fusion, logits refined by TLP" in visitor.locator("#run-status").inner_text()
        assert visitor.get_by_role("tab", selected=True).inner_text() == "Heatmaps", "the shared tab is open"
        wait_for_image(visitor, "#heatmaps", timeout_ms=30_000)
        assert visitor.locator("#heatmaps img").count() >= len(CLASSES)
        visitor.screenshot(path=str(ARTIFACTS / "shared-link.png"))
        open_tab(visitor, "Segment")
        assert _legend(visitor) == legend, "the same classes with the same shares"
        assert visitor.locator("#classes textarea").input_value() == "; ".join(CLASSES)
        assert float(visitor.locator("#threshold input[type=number]").input_value()) == 0.2
        wait_for_image(visitor, "#overlay")
        summary = visitor.locator("#summary-file").inner_text()
        assert "scclip_summary" in summary, "the visitor has downloads of its own run"


def test_a_share_link_saved_before_the_refine_choice_still_opens(page) -> None:
    """A snapshot as the page before the refine choice saved it: the ticked "Refine edges" checkbox where the choice
    is now (Gradio keys a snapshot's components by id), without the hidden refine_edges switch that came later,
    completed as the app does when it starts (`complete_share_links`)."""
    segment_in_page(page, page.app_url, ROOT / "assets" / "astronaut.jpg", "; ".join(CLASSES), background="")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.evaluate("navigator.clipboard.writeText('')")
    page.locator("#share-row button").click()
    link = _copied_link(page)
    state = share_links_folder() / parse_qs(urlparse(link).query)["deep_link"][0] / "state.json"
    components = json.loads(state.read_text())
    choice = next(item for item in components if item["props"].get("elem_id") == "refine")
    switch = next(item for item in components if item["props"].get("elem_id") == "refine-edges")
    checkbox = {
        **switch,
        "id": choice["id"],
        "props": {**switch["props"], "value": True, "visible": True, "label": "Refine edges (PAMR)"},
    }
    older = [checkbox if item is choice else item for item in components if item["id"] < switch["id"]]
    state.write_text(json.dumps(older))
    assert complete_share_links(share_links_folder(), page.demo.config["components"]) >= 1

    with browser_page(page.playwright) as visitor:
        visitor.goto(link)
        visitor.locator("#run-status").get_by_text("Opened from a shared link").wait_for(timeout=RUN_TIMEOUT_MS)
        assert "logits refined by PAMR (10 steps)" in visitor.locator("#run-status").inner_text()
        assert _legend(visitor), "the shared run is drawn"


def test_a_batch_of_three_images_gives_overlays_a_table_and_a_zip(page, tmp_path) -> None:
    images = write_batch_images(tmp_path, 3)
    names = segment_batch_in_page(page, page.app_url, images, "red; blue")
    assert f"at most {LIMITS.max_batch_files} images per request" in page.locator("#tab-batch").inner_text()
    assert names == [image.name for image in images]
    assert "3 of 3 images segmented" in page.locator("#batch-status").inner_text()
    assert page.locator("#batch-zip a[download]").get_attribute("download") == "scclip_batch_UNTRAINED.zip"
    page.screenshot(path=str(ARTIFACTS / "batch.png"), full_page=True)


def test_the_video_tab_segments_a_short_clip(page, tmp_path) -> None:
    """An 8-frame 64x48 clip written with PyAV: the overlay video plays, the legend and the plot fill, the zip is
    offered."""
    from fractions import Fraction

    import numpy as np

    from scclip_core.video import VideoWriter

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, Fraction(8), (64, 48)) as writer:
        for index in range(8):
            frame = np.full((48, 64, 3), (40, 90, 200), dtype=np.uint8)
            frame[10:30, 6 * index : 6 * index + 16] = (230, 40, 30)
            writer.write(frame)
    names = segment_video_in_page(page, page.app_url, clip, "; ".join(CLASSES))
    assert set(CLASSES) <= set(names), names
    wait_for_image(page, "#video-shares", timeout_ms=30_000)
    assert page.locator("#video-zip a").first.get_attribute("href").endswith("scclip_video_UNTRAINED.zip")
    page.screenshot(path=str(ARTIFACTS / "video.png"))


def test_the_live_tab_segments_the_fake_camera_as_it_streams(page) -> None:
    """Chromium's fake camera streams to the Live tab: overlays keep arriving and the legend names the classes."""
    with browser_page(page.playwright, FAKE_CAMERA_FLAGS) as viewer:
        stream_fake_camera(viewer, page.app_url, "red; blue")
        names = wait_for_live_frames(viewer, 3)
        assert {"red", "blue"} <= set(names), names
        viewer.screenshot(path=str(ARTIFACTS / "live.png"))
        viewer.locator("#live-input button", has_text="Stop").click()
