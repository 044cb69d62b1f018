"""scclip_core.render: overlays, heatmaps, legends and figures, checked on synthetic inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from scclip_core import InputError, render

LIME = np.array([0, 255, 0])


def two_class_scene(height: int = 40, width: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A grey photo and labels: class 0 on the left half, class 1 on the right half."""
    image = np.full((height, width, 3), 100, dtype=np.uint8)
    labels = np.zeros((height, width), dtype=np.int64)
    labels[:, width // 2 :] = 1
    return image, labels


def test_palette_is_stable_and_distinct() -> None:
    small, large = render.palette(5), render.palette(40)
    assert np.array_equal(small, large[:5]), "adding classes must not recolour earlier ones"
    assert len({tuple(colour) for colour in large}) == 40


def test_label_map_holds_class_indices_and_black_background() -> None:
    _, labels = two_class_scene()
    picture = render.label_map_image(labels, 2, background_index=1)
    assert picture.mode == "P"
    assert np.array_equal(np.asarray(picture), labels)
    assert picture.getpalette()[3:6] == [0, 0, 0]


def test_overlay_tints_visible_classes_and_leaves_hidden_and_background_alone() -> None:
    image, labels = two_class_scene()
    labels[:5] = 2  # a top strip of background
    colours = render.palette(3).astype(float)
    shown = np.asarray(render.overlay(image, labels, 3, opacity=0.5, background_index=2, draw_boundaries=False))
    expected_left = 0.5 * 100 + 0.5 * colours[0]
    assert np.allclose(shown[20, 5], expected_left, atol=1)
    assert np.array_equal(shown[2, 5], image[2, 5]), "background stays untinted"

    hidden = np.asarray(render.overlay(image, labels, 3, opacity=0.5, hidden=[1], background_index=2))
    assert np.array_equal(hidden[20, -5], image[20, -5]), "a hidden class shows the photo"
    assert not np.array_equal(hidden[20, 5], image[20, 5])


def test_overlay_opacity_extremes_and_boundaries() -> None:
    image, labels = two_class_scene()
    assert np.array_equal(np.asarray(render.overlay(image, labels, 2, opacity=0.0)), image)
    full = np.asarray(render.overlay(image, labels, 2, opacity=1.0, draw_boundaries=False))
    assert np.array_equal(full[10, 5], render.palette(2)[0])
    with_edges = np.asarray(render.overlay(image, labels, 2, opacity=1.0))
    column = labels.shape[1] // 2 - 1
    assert with_edges[10, column].sum() < full[10, column].sum(), "boundary pixels are drawn darker"
    with pytest.raises(InputError):
        render.overlay(image, labels[:-1], 2)


def test_class_boundaries_mark_label_changes_only() -> None:
    _, labels = two_class_scene(4, 6)
    edges = render.class_boundaries(labels)
    assert edges[:, 2].all() and edges.sum() == 4


def test_stamp_draws_a_red_strip_and_keeps_the_rest() -> None:
    photo = Image.new("RGB", (200, 120), (10, 200, 10))
    stamped = np.asarray(render.stamp(photo, "UNTRAINED"))
    assert tuple(stamped[1, 1]) == (0xB9, 0x1C, 0x1C)
    assert tuple(stamped[-1, -1]) == (10, 200, 10)
    assert stamped.shape == (120, 200, 3)


def test_heatmap_is_min_max_normalised_jet() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    values = np.linspace(5.0, 7.0, 100, dtype=np.float32).reshape(10, 10)
    picture = np.asarray(render.heatmap(image, values, alpha=1.0))
    top = np.round(np.asarray(colormaps["jet"](1.0)[:3]) * 255)
    bottom = np.round(np.asarray(colormaps["jet"](0.0)[:3]) * 255)
    assert np.allclose(picture[-1, -1], top, atol=1) and np.allclose(picture[0, 0], bottom, atol=1)
    flat = np.asarray(render.heatmap(image, np.ones((10, 10)), alpha=1.0))
    assert np.allclose(flat, bottom, atol=1), "a constant map must not divide by zero"


def test_class_heatmaps_one_per_class_downscaled_and_captioned() -> None:
    image = np.zeros((300, 800, 3), dtype=np.uint8)
    probs = np.random.default_rng(0).random((3, 300, 800)).astype(np.float32)
    pictures = render.class_heatmaps(image, probs, ["a", "b", "c"], max_side=200)
    assert [caption.split(" ")[0] for _, caption in pictures] == ["a", "b", "c"]
    assert all(picture.size == (200, 75) for picture, _ in pictures)


def test_legend_image_has_a_row_per_class() -> None:
    legend = render.legend_image(["a", "b", "c"], shares=[0.5, 0.25, 0.25], background_index=2)
    assert legend.height == 3 * 24 + 8
    assert tuple(np.asarray(legend)[4 + 2 * 24 + 10, 12]) == (0, 0, 0), "background swatch is black"


def test_mark_point_draws_crosshair_and_window() -> None:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    marked = np.asarray(render.mark_point(image, (30, 40), (10, 10, 90, 90)))
    assert tuple(marked[40, 30]) == (255, 255, 255)
    assert tuple(marked[10, 50]) == (255, 255, 0)
    assert tuple(marked[70, 70]) == (128, 128, 128)


def _grid_rows(grid: tuple[int, int]) -> np.ndarray:
    rows, cols = grid
    y, x = np.mgrid[0:rows, 0:cols]
    return (1.0 - np.hypot(y - rows / 2, x - cols / 2) / max(rows, cols)).reshape(-1)


def test_similarity_figure_draws_the_beta_contour_only_when_crossed() -> None:
    crop = np.full((112, 112, 3), 90, dtype=np.uint8)
    grid = (7, 7)
    crossing = _grid_rows(grid)  # from about 0.3 to 1.0
    lime_crossed = (
        np.abs(np.asarray(render.similarity_figure(crop, [("m", crossing)], 3, grid, 0.6)).astype(int) - LIME).sum(-1)
        < 60
    ).sum()
    lime_flat = (
        np.abs(
            np.asarray(render.similarity_figure(crop, [("m", np.full(49, 0.9))], 3, grid, 0.6)).astype(int) - LIME
        ).sum(-1)
        < 60
    ).sum()
    assert lime_crossed > lime_flat + 50


def test_anomaly_and_attention_figures_render() -> None:
    image = np.full((150, 200, 3), 90, dtype=np.uint8)
    grid = (7, 7)
    windows = [(0, 0, 112, 112), (0, 88, 112, 200), (38, 0, 150, 112)]
    anomalies = [np.array([3, 10]), np.array([], dtype=np.int64), np.array([48])]
    lof = np.random.default_rng(1).random(49).astype(np.float32)
    norms = np.random.default_rng(2).random((12, 49)).astype(np.float32)
    overview = render.anomaly_figure(image, windows, anomalies, grid, 0, lof, norms, note="untrained")
    attention = render.attention_figure(
        np.full((112, 112, 3), 90, np.uint8), lof / lof.sum(), lof[::-1] / lof.sum(), 5, grid, anomalies=anomalies[0]
    )
    for figure in (overview, attention):
        assert figure.mode == "RGB" and figure.width > 500 and figure.height > 250
        assert np.asarray(figure).std() > 10, "the figure has content"
    pixels = np.asarray(overview).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 100, "anomaly boxes are drawn in red"
