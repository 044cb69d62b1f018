"""Take the documentation's screenshots: start the app in-process, drive one view in Chromium, save the page.

    python -m tools.screenshot                               # the README's: Segment, assets/screenshot.png
    python -m tools.screenshot --view video                  # docs/assets/video.png (also: live, batch)
    python -m tools.screenshot [--model tiny-test --weights random]

It drives the page with the browser test's own steps (tests/browser.py) against Debian's /usr/bin/chromium: the
video is a pan across an example photo written with PyAV, the batch three example photos, the live view Chromium's
fake camera.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ASSETS = Path("assets")
BATCH_PHOTOS = ("coffee.jpg", "chelsea.jpg", "rocket.jpg")
VIDEO_PHOTO = "chelsea.jpg"
VIDEO_SIZE = (320, 240)
VIDEO_FRAMES = 12


def pan_clip(photo: Path, path: Path) -> Path:
    """A short clip panning across `photo` from left to right, written with PyAV."""
    from scclip_core.video import VideoWriter

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    width, height = VIDEO_SIZE
    scale = height / rgb.shape[0]
    wide = np.asarray(Image.fromarray(rgb).resize((round(rgb.shape[1] * scale), height)))
    travel = max(0, wide.shape[1] - width)
    with VideoWriter(path, Fraction(6), VIDEO_SIZE) as writer:
        for index in range(VIDEO_FRAMES):
            left = travel * index // (VIDEO_FRAMES - 1)
            writer.write(np.ascontiguousarray(wide[:, left : left + width]))
    return path


def show_segment(page: Any, url: str, arguments: argparse.Namespace, folder: Path) -> None:
    from tests.browser import segment_in_page

    segment_in_page(page, url, Path(arguments.image), arguments.classes, background="", threshold=0)
    page.locator("#background-accordion").get_by_text("Background", exact=True).click()


def show_video(page: Any, url: str, arguments: argparse.Namespace, folder: Path) -> None:
    from tests.browser import segment_video_in_page, wait_for_image

    segment_video_in_page(
        page, url, pan_clip(ASSETS / VIDEO_PHOTO, folder / "pan.mp4"), "cat; sofa; blanket", background=""
    )
    wait_for_image(page, "#video-shares")


def show_batch(page: Any, url: str, arguments: argparse.Namespace, folder: Path) -> None:
    from tests.browser import segment_batch_in_page

    segment_batch_in_page(page, url, [ASSETS / name for name in BATCH_PHOTOS], "cup; cat; rocket; sky", background="")


def show_live(page: Any, url: str, arguments: argparse.Namespace, folder: Path) -> None:
    from tests.browser import stream_fake_camera, wait_for_live_frames

    stream_fake_camera(page, url, "green; circle")
    wait_for_live_frames(page, 5)


VIEWS: dict[str, tuple[Callable[[Any, str, argparse.Namespace, Path], None], str, str | None]] = {
    "segment": (show_segment, "assets/screenshot.png", None),
    "video": (show_video, "docs/assets/video.png", "#video-shares"),
    "live": (show_live, "docs/assets/live.png", "#live-legend"),
    "batch": (show_batch, "docs/assets/batch.png", "#batch-zip"),
}


def main() -> None:
    import torch
    from playwright.sync_api import sync_playwright

    from demo.host import DEMO_CONFIG
    from tests.browser import FAKE_CAMERA_FLAGS, VIEWPORT, browser_page
    from tests.serving import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--view", choices=list(VIEWS), default="segment")
    parser.add_argument("--out", default=None, help="default: the view's picture in the repository")
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
    show, default_out, last = VIEWS[arguments.view]
    out = arguments.out or default_out

    config = replace(DEMO_CONFIG, templates="simple") if arguments.model == "tiny-test" else None
    flags = FAKE_CAMERA_FLAGS if arguments.view == "live" else ()
    with (
        tempfile.TemporaryDirectory(prefix="scclip-screenshot-") as folder,
        serve(arguments.model, arguments.weights, config) as (_, url),
        sync_playwright() as playwright,
        browser_page(playwright, flags) as page,
    ):
        page.set_viewport_size({"width": VIEWPORT["width"], "height": arguments.height})
        show(page, url, arguments, Path(folder))
        page.wait_for_timeout(1500)
        page.evaluate("window.scrollTo(0, 0)")  # so that bounding boxes are in the page's coordinates
        if last is None:
            shot = page.screenshot(full_page=False)
        else:
            box = page.locator("#views").bounding_box()
            bottom = page.locator(last).bounding_box()
            clip = {
                "x": box["x"],
                "y": box["y"],
                "width": box["width"],
                "height": bottom["y"] + bottom["height"] - box["y"],
            }
            shot = page.screenshot(full_page=True, clip=clip)
        picture = Image.open(io.BytesIO(shot)).convert("RGB")
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"saved {out} ({Path(out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
