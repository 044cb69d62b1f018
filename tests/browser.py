"""Drive the app in Debian's Chromium with Playwright: the steps of the browser test and of the screenshot tool.

Playwright's own browser download is never needed: it drives /usr/bin/chromium (`SCCLIP_CHROMIUM` overrides).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page, Playwright

CHROMIUM = os.environ.get("SCCLIP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 1000}
RUN_TIMEOUT_MS = 90_000
INSIDE_TABS = {
    "Anomalies": ["#anomaly-figure", "#attention-figure", "#anomaly-click"],
    "Similarity": ["#similarity-figure", "#similarity-click"],
    "Heatmaps": ["#heatmaps"],
}


@contextlib.contextmanager
def browser_page(playwright: Playwright, flags: Sequence[str] = ()) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile (deleted afterwards), launched with `flags` besides ours."""
    with tempfile.TemporaryDirectory(prefix="scclip-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, *flags], viewport=VIEWPORT
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def image_loaded(page: Page, selector: str) -> bool:
    """Whether the element holds at least one fully decoded image with non-zero size."""
    return bool(
        page.eval_on_selector(
            selector,
            "el => Array.from(el.querySelectorAll('img')).some(img => img.complete && img.naturalWidth > 0)",
        )
    )


def wait_for_image(page: Page, selector: str, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until `selector` shows a decoded image."""
    page.wait_for_function(
        """sel => { const el = document.querySelector(sel);
                    return !!el && Array.from(el.querySelectorAll('img'))
                        .some(img => img.complete && img.naturalWidth > 0); }""",
        arg=selector,
        timeout=timeout_ms,
    )


def segment_in_page(
    page: Page, url: str, image: Path, classes: str, *, background: str | None = None, threshold: float | None = None
) -> int:
    """Open the app, upload `image`, type `classes` (and optionally background words / threshold), press Segment,
    and wait for the overlay and the legend. Returns the number of legend entries.

    Every typed value is read back from the page right before Segment is pressed, and typed again if the page
    lost it, so a slow first render on a busy machine cannot send the defaults instead."""
    page.goto(url)
    page.wait_for_selector("#input-image")
    page.locator("#input-image input[type=file]").set_input_files(str(image))
    wait_for_image(page, "#input-image")
    fields = {"#classes textarea": classes}
    if background is not None:
        fields["#background-words textarea"] = background
    if threshold is not None:
        fields["#threshold input[type=number]"] = str(threshold)
    for _ in range(3):
        lost = {selector: value for selector, value in fields.items() if not _holds(page, selector, value)}
        if not lost:
            break
        for selector, value in lost.items():
            _type_into(page, selector, value)
        page.wait_for_timeout(300)
    else:
        raise AssertionError(f"the page did not keep the typed values: {lost}")
    page.locator("#run").click()
    wait_for_image(page, "#overlay")
    page.wait_for_selector("#legend .legend-entry", timeout=RUN_TIMEOUT_MS)
    return page.locator("#legend .legend-entry").count()


def _holds(page: Page, selector: str, value: str) -> bool:
    """Whether the field is on the page and shows `value` (numbers compared as numbers)."""
    field = page.locator(selector)
    if not field.is_visible():
        return False
    shown = field.input_value()
    if selector.endswith("[type=number]"):
        return shown != "" and float(shown) == float(value)
    return shown == value


def _type_into(page: Page, selector: str, value: str) -> None:
    """Type `value` into a field and leave it. A field in a folded accordion is not on the page (Gradio renders
    it when the accordion opens), so the accordion is opened and left open."""
    field = page.locator(selector)
    if selector.startswith("#background-words") and not field.is_visible():
        page.locator("#background-accordion").get_by_text("Background", exact=True).click()
    field.fill(value)
    field.press("Enter" if selector.endswith("[type=number]") else "Tab")


def click_image_at(page: Page, selector: str, x_fraction: float, y_fraction: float) -> None:
    """Click the picture in `selector` at a fraction of its width and height, allowing for letterboxing
    (Gradio shows images with `object-fit: contain`), once it has loaded (a freshly opened tab may still be fetching
    it)."""
    wait_for_image(page, selector, timeout_ms=30_000)
    image = page.locator(f"{selector} img").first
    box = image.bounding_box()
    natural_width, natural_height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    scale = min(box["width"] / natural_width, box["height"] / natural_height)
    left = (box["width"] - natural_width * scale) / 2
    top = (box["height"] - natural_height * scale) / 2
    x = left + x_fraction * natural_width * scale
    y = top + y_fraction * natural_height * scale
    image.click(position={"x": x, "y": y})


def open_tab(page: Page, name: str) -> None:
    """Click a results tab by its label."""
    page.get_by_role("tab", name=name).click()


def write_batch_images(folder: Path, count: int) -> list[Path]:
    """`count` small PNGs of two coloured halves (the colours differ per image), for the Batch tab."""
    import numpy as np
    from PIL import Image

    paths = []
    for index in range(count):
        rgb = np.zeros((48, 64, 3), dtype=np.uint8)
        rgb[:, :32] = (200, 40 * index, 30)
        rgb[:, 32:] = (30, 60, 200 - 40 * index)
        paths.append(folder / f"batch_{index + 1}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def segment_video_in_page(
    page: Page, url: str, clip: Path, classes: str, *, background: str | None = None
) -> list[str]:
    """Open the app, type `classes`, upload `clip` in the Video tab, segment it, and wait for the overlay video (a
    source to play) and the legend (`background`: the background words to type). Returns the legend's class names."""
    page.goto(url)
    page.wait_for_selector("#classes textarea")
    _type_into(page, "#classes textarea", classes)
    if background is not None:
        _type_into(page, "#background-words textarea", background)
    open_tab(page, "Video")
    page.locator("#video-input input[type=file]").set_input_files(str(clip))
    page.wait_for_selector("#video-input video", timeout=30_000)
    if not _holds(page, "#classes textarea", classes):
        _type_into(page, "#classes textarea", classes)
    page.locator("#run-video").click()
    page.wait_for_function(
        "() => { const video = document.querySelector('#video-output video');"
        " return !!video && !!(video.currentSrc || video.getAttribute('src')); }",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_selector("#video-legend .legend-entry", timeout=RUN_TIMEOUT_MS)
    return page.locator("#video-legend .legend-entry").evaluate_all("els => els.map(e => e.dataset.class)")


FAKE_CAMERA_FLAGS = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


def stream_fake_camera(page: Page, url: str, classes: str) -> None:
    """Open the app in a page launched with `FAKE_CAMERA_FLAGS`, type `classes`, open the Live tab and start the
    webcam stream: Gradio's webcam asks for access first, then streams once Record is pressed."""
    page.goto(url)
    page.wait_for_selector("#input-image")
    for _ in range(3):
        if _holds(page, "#classes textarea", classes):
            break
        _type_into(page, "#classes textarea", classes)
        page.wait_for_timeout(300)
    else:
        raise AssertionError("the page did not keep the typed classes")
    open_tab(page, "Live")
    page.locator("#live-input").get_by_text("Click to Access Webcam").click()
    page.locator("#live-input button", has_text="Record").click()


def segment_batch_in_page(
    page: Page, url: str, images: list[Path], classes: str, *, background: str | None = None
) -> list[str]:
    """Open the app, type `classes`, upload `images` in the Batch tab, segment them, and wait for one overlay and one
    table row per image (`background`: the background words to type). Returns the table's file names, in order."""
    page.goto(url)
    page.wait_for_selector("#classes textarea")
    _type_into(page, "#classes textarea", classes)
    if background is not None:
        _type_into(page, "#background-words textarea", background)
    open_tab(page, "Batch")
    page.locator("#batch-input input[type=file]").set_input_files([str(image) for image in images])
    page.wait_for_function(
        "count => document.querySelectorAll('#batch-input tr.file').length === count", arg=len(images), timeout=30_000
    )
    if not _holds(page, "#classes textarea", classes):
        _type_into(page, "#classes textarea", classes)
    page.locator("#run-batch").click()
    page.wait_for_function(
        "count => document.querySelectorAll('#batch-gallery img').length === count",
        arg=len(images),
        timeout=RUN_TIMEOUT_MS,
    )
    wait_for_image(page, "#batch-gallery")
    first_cells = "#batch-table [role=gridcell][data-col='0']"  # one per row of the table
    page.wait_for_function(
        "([cells, count]) => document.querySelectorAll(cells).length === count",
        arg=[first_cells, len(images)],
        timeout=30_000,
    )
    return page.locator(first_cells).all_inner_texts()


def wait_for_live_frames(page: Page, count: int) -> list[str]:
    """Wait until the Live tab's overlay shows and its status counts `count` segmented frames; returns the legend's
    class names."""
    wait_for_image(page, "#live-output", timeout_ms=60_000)
    page.wait_for_function(
        "count => Number((/(\\d+) segmented/.exec(document.querySelector('#live-status').innerText) || [])[1])"
        " >= count",
        arg=count,
        timeout=30_000,
    )
    return page.locator("#live-legend .legend-entry").evaluate_all("els => els.map(e => e.dataset.class)")
