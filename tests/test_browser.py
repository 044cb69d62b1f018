"""The app in a real browser: Debian's Chromium driven by Playwright (no `playwright install`).

Uploads a photo, types classes, segments, checks the overlay and one legend entry per class, opens every
inside-view tab and checks its figure rendered, picks a patch by clicking, runs the ablation, checks that bad
input shows its message in the page, and saves screenshots to $SCCLIP_ARTIFACTS (default tests/artifacts).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.browser import (
    CHROMIUM,
    INSIDE_TABS,
    VIEWPORT,
    browser_page,
    click_image_at,
    image_loaded,
    open_tab,
    segment_in_page,
    wait_for_image,
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
        serve("tiny-test", "random", FAST_CONFIG) as (_, url),
        sync_api.sync_playwright() as playwright,
        browser_page(playwright) as browser_tab,
    ):
        browser_tab.app_url = url
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


def test_ablation_tab_shows_every_configuration_readably(page) -> None:
    open_tab(page, "Ablation")
    page.locator("#run-ablation").click()
    page.wait_for_function("() => document.querySelectorAll('#ablation-gallery img').length >= 11", timeout=120_000)
    table = page.locator("#ablation-table")
    assert "− anomaly resolution" in table.inner_text() and "shared" in table.inner_text()
    page.screenshot(path=str(ARTIFACTS / "ablation.png"), full_page=True)
    for width in (1440, 390):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        assert not _fully_visible(page, "#ablation-gallery .caption-label"), f"captions cut at {width} px"
        assert not _fully_visible(page, "#ablation-table th"), f"table headers cut at {width} px"
    page.screenshot(path=str(ARTIFACTS / "ablation-phone.png"), full_page=True)
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
