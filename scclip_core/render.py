"""Pictures from segmentations: palettes, label maps, overlays, heatmaps and diagnostic figures.

Pure numpy / PIL / matplotlib (Agg, object-oriented API, no pyplot global state), so the CLI and the demo share it
and it is safe to call from several threads. Inputs are numpy arrays; callers convert torch tensors first.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

BACKGROUND_COLOUR = (0, 0, 0)
WARNING_COLOUR = "#b91c1c"
DEFAULT_OPACITY = 0.55

Box = tuple[int, int, int, int]


def palette(num_classes: int) -> np.ndarray:
    """`num_classes` distinct RGB colours (uint8, shape (n, 3)), the same for the same index every time.

    Colours follow the golden-angle hue sequence, so neighbouring indices differ strongly and adding classes
    never recolours the earlier ones.
    """
    import colorsys

    colours = []
    for index in range(num_classes):
        hue = (index * 0.381966) % 1.0
        saturation = 0.65 + 0.35 * ((index // 3) % 2)
        value = 0.95 - 0.25 * ((index // 6) % 2)
        colours.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
    return np.asarray(colours, dtype=np.uint8).reshape(num_classes, 3)


def label_map_image(labels: np.ndarray, num_classes: int, background_index: int | None = None) -> Image.Image:
    """A PNG-ready image whose pixel values are the class indices.

    Up to 256 classes: an 8-bit palette ('P') image in the classes' colours. Above: 16-bit grayscale ('I;16'),
    which holds up to 65536 classes but no colours.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if num_classes > 65536:
        raise ValueError(f"a 16-bit label image holds at most 65536 classes, not {num_classes}")
    if num_classes > 256:
        return Image.fromarray(labels.astype(np.uint16))
    colours = palette(num_classes)
    if background_index is not None:
        colours[background_index] = BACKGROUND_COLOUR
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[:num_classes] = colours
    image.putpalette(flat.reshape(-1).tolist())
    return image


def hex_colour(rgb: Sequence[int]) -> str:
    """`#rrggbb` for an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def class_boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose right or lower neighbour has another label."""
    edges = np.zeros(labels.shape, dtype=bool)
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edges[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edges


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    opacity: float = DEFAULT_OPACITY,
    hidden: Sequence[int] = (),
    background_index: int | None = None,
    draw_boundaries: bool = True,
) -> Image.Image:
    """The photo with each visible class tinted in its palette colour.

    The background class and `hidden` class indices are left untinted, so hiding a class shows the photo there;
    class boundaries are drawn darker so regions stay readable at low opacity.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    opacity = float(np.clip(opacity, 0.0, 1.0))
    colours = palette(num_classes).astype(np.float32)
    tinted = np.ones(num_classes, dtype=bool)
    tinted[[index for index in hidden if 0 <= index < num_classes]] = False
    if background_index is not None:
        tinted[background_index] = False
    base = image[..., :3].astype(np.float32)
    mask = tinted[labels]
    blended = base.copy()
    blended[mask] = (1.0 - opacity) * base[mask] + opacity * colours[labels[mask]]
    if draw_boundaries and opacity > 0:
        edges = class_boundaries(labels) & mask
        blended[edges] = blended[edges] * (1.0 - min(1.0, 2 * opacity)) + 20.0 * min(1.0, 2 * opacity)
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def stamp(image: Image.Image, text: str) -> Image.Image:
    """A copy of `image` with `text` on a red strip across the top (e.g. to mark untrained weights)."""
    stamped = image.convert("RGB")
    draw = ImageDraw.Draw(stamped)
    size = max(10, min(28, stamped.width // 28))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    strip = bottom - top + size // 2
    draw.rectangle((0, 0, stamped.width, strip), fill=WARNING_COLOUR)
    draw.text((max(2, (stamped.width - (right - left)) // 2), size // 4 - top), text, fill="white", font=font)
    return stamped


def legend_image(
    names: Sequence[str],
    *,
    shares: Sequence[float] | None = None,
    hidden: Sequence[int] = (),
    background_index: int | None = None,
    width: int = 320,
) -> Image.Image:
    """A legend as a picture: one row per class with its colour swatch, name and (optionally) image share."""
    colours = palette(len(names))
    if background_index is not None:
        colours[background_index] = BACKGROUND_COLOUR
    row, size = 24, 14
    font = ImageFont.load_default(size=size)
    legend = Image.new("RGB", (width, row * max(1, len(names)) + 8), "white")
    draw = ImageDraw.Draw(legend)
    for index, name in enumerate(names):
        top = 4 + index * row
        draw.rectangle((6, top + 3, 24, top + 21), fill=tuple(int(c) for c in colours[index]), outline="black")
        label = name if shares is None else f"{name}  {100 * shares[index]:.1f}%"
        draw.text((32, top + 4), label, fill="#9ca3af" if index in hidden else "black", font=font)
    return legend


def heatmap(image: np.ndarray, values: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """`values` (H, W) min-max normalised, coloured with `cmap` and blended over `image` (H, W, 3)."""
    if image.shape[:2] != values.shape:
        raise ValueError(f"image {image.shape[:2]} and values {values.shape} differ in size")
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    coloured = colormaps[cmap](normalised)[..., :3] * 255.0
    blended = (1.0 - alpha) * image[..., :3].astype(np.float32) + alpha * coloured
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` (H, W) float or (H, W, 3) uint8, bilinearly shrunk so its longer side is at most `max_side`."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def class_heatmaps(
    image: np.ndarray, probs: np.ndarray, names: Sequence[str], *, max_side: int = 384
) -> list[tuple[Image.Image, str]]:
    """One blended jet heatmap per class (min-max normalised per class), captioned with name and peak probability."""
    small = downscale(image, max_side)
    pictures = []
    for index, name in enumerate(names):
        values = downscale(probs[index].astype(np.float32), max_side)
        if values.shape != small.shape[:2]:
            values = np.asarray(
                Image.fromarray(values, mode="F").resize((small.shape[1], small.shape[0]), Image.BILINEAR)
            )
        pictures.append((heatmap(small, values), f"{name} (max p={float(probs[index].max()):.2f})"))
    return pictures


def figure_image(figure: Figure, *, dpi: int = 100) -> Image.Image:
    """Render a matplotlib Figure to an RGB PIL image."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _new_figure(columns: int, *, note: str | None, height: float = 3.6) -> tuple[Figure, list]:
    figure = Figure(figsize=(3.9 * columns, height + (0.35 if note else 0)), layout="constrained")
    axes = list(np.atleast_1d(figure.subplots(1, columns)))
    if note:
        figure.suptitle(note, color=WARNING_COLOUR, fontweight="bold")
    return figure, axes


def _patch_box(index: int, grid: tuple[int, int], box: Box) -> tuple[float, float, float, float]:
    """(x, y, width, height) of flat patch `index` of a `grid` laid over `box` = (y0, x0, y1, x1)."""
    rows, cols = grid
    y0, x0, y1, x1 = box
    height, width = (y1 - y0) / rows, (x1 - x0) / cols
    row, col = divmod(int(index), cols)
    return x0 + col * width, y0 + row * height, width, height


def anomaly_figure(
    image: np.ndarray,
    windows: Sequence[Box],
    anomalies: Sequence[np.ndarray],
    grid: tuple[int, int],
    selected: int,
    lof_scores: np.ndarray,
    token_norms: np.ndarray,
    *,
    note: str | None = None,
) -> Image.Image:
    """Three panels: anomaly tokens marked on the image (all windows), the LOF score map of the selected window
    over its patch grid, and the selected window's patch-token norms across layers (anomalies vs the rest).

    `windows` are in `image` pixel coordinates; `anomalies[i]` holds flat patch indices of window i;
    `lof_scores` is (N,) and `token_norms` (L, N) for the selected window.
    """
    figure, (marked, scores, norms) = _new_figure(3, note=note)
    marked.imshow(image)
    for window, indices in zip(windows, anomalies):
        for index in np.asarray(indices).reshape(-1):
            x, y, w, h = _patch_box(int(index), grid, window)
            marked.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1.2))
    y0, x0, y1, x1 = windows[selected]
    marked.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linestyle="--"))
    marked.set_xlim(-0.5, image.shape[1] - 0.5)
    marked.set_ylim(image.shape[0] - 0.5, -0.5)
    total = sum(len(np.asarray(indices).reshape(-1)) for indices in anomalies)
    marked.set_title(f"{total} anomaly tokens in {len(windows)} window(s)")
    marked.set_axis_off()

    selected_anomalies = np.asarray(anomalies[selected]).reshape(-1).astype(int)
    shown = scores.imshow(lof_scores.reshape(grid), cmap="magma", interpolation="nearest")
    for index in selected_anomalies:
        row, col = divmod(int(index), grid[1])
        scores.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.5))
    figure.colorbar(shown, ax=scores, shrink=0.8, label="LOF score")
    scores.set_title("LOF scores, selected window (cyan: anomalies)")
    scores.set_xticks([])
    scores.set_yticks([])

    layers = np.arange(1, token_norms.shape[0] + 1)
    normal = np.setdiff1d(np.arange(token_norms.shape[1]), selected_anomalies)
    if normal.size:
        low, mid, high = np.percentile(token_norms[:, normal], [5, 50, 95], axis=1)
        norms.fill_between(layers, low, high, color="tab:blue", alpha=0.25, label="other tokens, 5-95%")
        norms.plot(layers, mid, color="tab:blue", label="other tokens, median")
    for position, index in enumerate(selected_anomalies):
        label = "anomaly tokens" if position == 0 else None
        norms.plot(layers, token_norms[:, index], color="red", alpha=0.7, label=label)
    norms.set_xlabel("block")
    norms.set_ylabel("patch-token L2 norm")
    norms.set_title("token norms across layers")
    norms.legend(fontsize=7, loc="upper left")
    return figure_image(figure)


def _map_panel(axis, crop: np.ndarray, values: np.ndarray, *, title: str, cmap: str, vmin: float, vmax: float):
    """`values` on the patch grid, stretched over `crop` and half transparent; returns the image artist."""
    height, width = crop.shape[:2]
    axis.imshow(crop, extent=(0, width, height, 0))
    shown = axis.imshow(
        values, cmap=cmap, alpha=0.6, vmin=vmin, vmax=vmax, extent=(0, width, height, 0), interpolation="nearest"
    )
    axis.set_title(title, fontsize=10)
    axis.set_axis_off()
    return shown


def _mark_patch(axis, index: int, grid: tuple[int, int], crop_shape: tuple[int, ...]) -> None:
    x, y, w, h = _patch_box(index, grid, (0, 0, crop_shape[0], crop_shape[1]))
    axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linewidth=2))
    axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="black", linewidth=0.8))


def attention_figure(
    crop: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    patch: int,
    grid: tuple[int, int],
    *,
    anomalies: np.ndarray | None = None,
    titles: tuple[str, str] = ("vanilla last-block attention", "SC-CLIP attention"),
    note: str | None = None,
) -> Image.Image:
    """The clicked patch's last-block attention over its window, before and after anomaly resolution.

    `before`/`after` are (N,) attention rows; each panel has its own colour scale (attention sums to 1 per row).
    Anomaly tokens are outlined in red on the 'before' panel, where they usually soak up the attention.
    """
    figure, (first, second) = _new_figure(2, note=note)
    for axis, values, title in ((first, before, titles[0]), (second, after, titles[1])):
        values = values.reshape(grid)
        shown = _map_panel(axis, crop, values, title=title, cmap="inferno", vmin=0.0, vmax=float(values.max()) or 1.0)
        figure.colorbar(shown, ax=axis, shrink=0.8)
        _mark_patch(axis, patch, grid, crop.shape)
    if anomalies is not None:
        for index in np.asarray(anomalies).reshape(-1):
            x, y, w, h = _patch_box(int(index), grid, (0, 0, crop.shape[0], crop.shape[1]))
            first.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1))
    return figure_image(figure)


def similarity_figure(
    crop: np.ndarray,
    maps: Sequence[tuple[str, np.ndarray]],
    patch: int,
    grid: tuple[int, int],
    beta: float,
    *,
    note: str | None = None,
) -> Image.Image:
    """One panel per (title, (N,) cosine row): the clicked patch's similarity over its window on a shared -1..1
    scale, with the β threshold drawn as a contour (the pairs SC-CLIP's aggregation keeps lie inside it)."""
    figure, axes = _new_figure(len(maps), note=note)
    height, width = crop.shape[:2]
    shown = None
    for axis, (title, values) in zip(axes, maps):
        values = values.reshape(grid)
        kept = float((values >= beta).mean())
        shown = _map_panel(
            axis, crop, values, title=f"{title}\n{100 * kept:.0f}% of patches ≥ β", cmap="coolwarm", vmin=-1.0, vmax=1.0
        )
        if values.min() < beta < values.max():
            rows, cols = grid
            xs = (np.arange(cols) + 0.5) * width / cols
            ys = (np.arange(rows) + 0.5) * height / rows
            axis.contour(xs, ys, values, levels=[beta], colors="lime", linewidths=1.8)
        _mark_patch(axis, patch, grid, crop.shape)
    colourbar = figure.colorbar(shown, ax=axes, shrink=0.8, label="cosine similarity")
    colourbar.ax.axhline(beta, color="lime", linewidth=2)
    colourbar.ax.text(
        1.6, beta, f"β={beta:g}", transform=colourbar.ax.get_yaxis_transform(), va="center", fontsize=8, color="green"
    )
    return figure_image(figure)


def mark_point(image: np.ndarray, point: tuple[int, int], window: Box | None = None) -> Image.Image:
    """The image with a crosshair at `point` = (x, y) and, optionally, the window (y0, x0, y1, x1) it falls in."""
    marked = Image.fromarray(image[..., :3].astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(marked)
    x, y = point
    radius = max(6, min(marked.size) // 40)
    if window is not None:
        y0, x0, y1, x1 = window
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline="yellow", width=max(1, radius // 4))
    for colour, width in (("black", max(3, radius // 2)), ("white", max(1, radius // 4))):
        draw.line((x - radius, y, x + radius, y), fill=colour, width=width)
        draw.line((x, y - radius, x, y + radius), fill=colour, width=width)
    return marked
