"""Take the README screenshot: start the app in-process, segment an example photo in Chromium, save the page.

    python -m tools.screenshot [--out assets/screenshot.png] [--model tiny-test --weights random]

It drives the page with the browser test's own steps (tests/browser.py) against Debian's /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import replace
from pathlib import Path

from PIL import Image


def main() -> None:
    import torch
    from playwright.sync_api import sync_playwright

    from demo.host import DEMO_CONFIG
    from tests.browser import VIEWPORT, browser_page, segment_in_page
    from tests.serving import serve

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
        page.locator("#background-accordion").get_by_text("Background", exact=True).click()
        page.wait_for_timeout(1500)
        page.evaluate("window.scrollTo(0, 0)")
        picture = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(arguments.out, optimize=True)
    print(f"saved {arguments.out} ({Path(arguments.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
