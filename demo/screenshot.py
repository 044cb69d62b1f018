"""Drive the app in Debian's Chromium with Playwright: the browser test's steps, and the README screenshot.

    python -m demo.screenshot [--out assets/screenshot.png] [--model tiny-test --weights random]

starts the app in-process, uploads an example photo, types its classes, segments, and saves a screenshot.
Playwright's own browser download is never needed: it drives /usr/bin/chromium (`SCCLIP_CHROMIUM` overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from demo.host import DEMO_CONFIG
from scclip_core import SegmenterConfig

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


FAST_CONFIG = SegmenterConfig(short_side=224, max_input_side=512, templates="simple")


@contextlib.contextmanager
def serve(
    model: str = "tiny-test",
    weights: str = "random",
    config: SegmenterConfig | None = FAST_CONFIG,
    session_budget_mb: int | None = None,
) -> Iterator[tuple[gr.Blocks, str]]:
    """The app launched in this process on a free local port: yields (demo, url), closes it afterwards."""
    from app import build_demo
    from demo.ui import launch_options

    demo = build_demo(model, weights, config=config, session_budget_mb=session_budget_mb)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield demo, url
    finally:
        demo.close()


@contextlib.contextmanager
def browser_page(playwright: Playwright) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="scclip-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport=VIEWPORT
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
    and wait for the overlay and the legend. Returns the number of legend entries."""
    page.goto(url)
    page.wait_for_selector("#input-image")
    page.locator("#input-image input[type=file]").set_input_files(str(image))
    wait_for_image(page, "#input-image")
    page.locator("#classes textarea").fill(classes)
    if background is not None:
        page.locator("#background-accordion").get_by_text("Background", exact=True).click()
        page.locator("#background-words textarea").fill(background)
        page.locator("#background-accordion").get_by_text("Background", exact=True).click()
    if threshold is not None:
        number = page.locator("#threshold input[type=number]")
        number.fill(str(threshold))
        number.press("Enter")
    page.locator("#run").click()
    wait_for_image(page, "#overlay")
    page.wait_for_selector("#legend .legend-entry", timeout=RUN_TIMEOUT_MS)
    return page.locator("#legend .legend-entry").count()


def click_image_at(page: Page, selector: str, x_fraction: float, y_fraction: float) -> None:
    """Click the picture in `selector` at a fraction of its width and height, allowing for letterboxing
    (Gradio shows images with `object-fit: contain`)."""
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


def main() -> None:
    import torch
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/screenshot.png")
    parser.add_argument("--model", default=os.environ.get("SCCLIP_MODEL", "tiny-test"))
    parser.add_argument("--weights", default=os.environ.get("SCCLIP_WEIGHTS", "random"))
    parser.add_argument("--image", default="assets/astronaut.jpg")
    parser.add_argument("--classes", default="person, astronaut; flag; space shuttle; helmet")
    parser.add_argument(
        "--seed", type=int, default=4, help="torch seed for random weights, so the screenshot is reproducible"
    )
    parser.add_argument("--height", type=int, default=1180, help="viewport height in pixels")
    arguments = parser.parse_args()
    torch.manual_seed(arguments.seed)

    config = replace(DEMO_CONFIG, templates="simple") if arguments.model == "tiny-test" else None
    with (
        serve(arguments.model, arguments.weights, config) as (_, url),
        sync_playwright() as playwright,
        browser_page(playwright) as page,
    ):
        page.set_viewport_size({"width": VIEWPORT["width"], "height": arguments.height})
        segment_in_page(page, url, Path(arguments.image), arguments.classes, background="", threshold=0)
        page.wait_for_timeout(1500)
        page.evaluate("window.scrollTo(0, 0)")
        picture = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(arguments.out, optimize=True)
    print(f"saved {arguments.out} ({Path(arguments.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
