"""Engine results as the page shows them: the overlay, the legend, the summary, the window crops of the inside
views, and the ablation's gallery and table. Pure functions of their inputs: they draw, and write nothing."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from demo.ablation import AblationRun
from demo.labels import describe_run, method_label, number_word
from demo.timings import RequestTimings
from scclip_core import VOCABULARY_PRESETS, NameMatch, PointNames, Segmentation, builtin_vocabulary, render

UNTRAINED_NOTE = "UNTRAINED (random) weights: outputs are meaningless"
GALLERY_OPACITY = 0.6  # the ablation's previews are small: the classes are tinted a little stronger
Box = tuple[int, int, int, int]
CAPTION_SEPARATOR = " · "
COCO_WHERE = (
    "the label map's COCO masks (compressed RLE, one annotation per class present, at the label PNG's size): the "
    "page's 'COCO masks' download, or the /coco endpoint in the same session (the same gradio_client Client)"
)


def class_colours(segmentation: Segmentation) -> list[str]:
    """Hex colour per class as in the overlay (the background class is drawn uncoloured, black in the PNG)."""
    return palette_colours(len(segmentation.class_names), segmentation.background_index)


def palette_colours(num_classes: int, background_index: int | None) -> list[str]:
    """`class_colours` from the number of classes and the background's index."""
    colours = [render.hex_colour(rgb) for rgb in render.palette(num_classes)]
    if background_index is not None:
        colours[background_index] = render.hex_colour(render.BACKGROUND_COLOUR)
    return colours


def summary(segmentation: Segmentation, timings: RequestTimings) -> dict[str, Any]:
    """The JSON summary: the engine's own, with the request's timings (every part of the visitor's wait) in place
    of the engine's steps, plus the legend (index, colour, share), what ran in words, where to get the COCO masks,
    and an untrained-weights flag."""
    data = segmentation.to_json()
    data["timings"] = timings.as_json()
    shares = segmentation.shares()
    colours = class_colours(segmentation)
    data["legend"] = [
        {"index": index, "name": name, "colour": colours[index], "share": shares.get(name, 0.0)}
        for index, name in enumerate(segmentation.class_names)
    ]
    data["description"] = describe_run(segmentation)
    data["reused_image_side"] = timings.image is None
    data["untrained_weights"] = segmentation.is_random_weights
    data["coco"] = COCO_WHERE
    if segmentation.is_random_weights:
        data["warning"] = UNTRAINED_NOTE
    return data


def overlay_picture(
    segmentation: Segmentation, opacity: float = render.DEFAULT_OPACITY, hidden: Sequence[str] = ()
) -> Image.Image:
    """The overlay as shown: hidden classes untinted, and stamped when the weights are untrained."""
    hidden_indices = [segmentation.class_names.index(name) for name in hidden if name in segmentation.class_names]
    picture = render.overlay(
        segmentation.image,
        segmentation.labels,
        len(segmentation.class_names),
        opacity=opacity,
        hidden=hidden_indices,
        background_index=segmentation.background_index,
    )
    return render.stamp(picture, UNTRAINED_NOTE) if segmentation.is_random_weights else picture


def legend_html(segmentation: Segmentation, hidden: Sequence[str] = ()) -> str:
    """One row per class (swatch, full name, share bar, percentage), largest share first; names wrap rather than
    being cut, and the bar keeps a minimum width, so it reads on a phone too."""
    return shares_legend_html(
        segmentation.class_names,
        segmentation.shares(),
        segmentation.background_index,
        hidden,
        untrained=segmentation.is_random_weights,
    )


def shares_legend_html(
    class_names: Sequence[str],
    shares: dict[str, float],
    background_index: int | None,
    hidden: Sequence[str] = (),
    *,
    untrained: bool,
) -> str:
    """`legend_html` from the class names and their shares (of an image, or their mean over a video's frames)."""
    colours = palette_colours(len(class_names), background_index)
    order = sorted(range(len(class_names)), key=lambda i: -shares.get(class_names[i], 0.0))
    rows = []
    for index in order:
        name = class_names[index]
        share = shares.get(name, 0.0)
        is_background = index == background_index
        muted = name in hidden
        swatch = (
            "background:repeating-linear-gradient(45deg,#ddd 0 3px,#fff 3px 6px)"
            if is_background
            else f"background:{colours[index]}"
        )
        note = " (left uncoloured)" if is_background else (" (hidden)" if muted else "")
        rows.append(
            f'<div class="legend-entry" data-class="{html.escape(name)}" style="display:grid;'
            "grid-template-columns:16px minmax(7em,1.2fr) minmax(48px,2fr) 3.6em;align-items:center;gap:8px;"
            f'margin:3px 0;opacity:{0.45 if muted else 1}">'
            f'<span style="{swatch};width:16px;height:16px;border:1px solid #555;border-radius:3px"></span>'
            f'<span style="overflow-wrap:anywhere;line-height:1.2">{html.escape(name)}{note}</span>'
            f'<span style="background:#eee;height:10px;border-radius:5px;overflow:hidden">'
            f'<span style="display:block;width:{100 * share:.1f}%;min-width:{2 if share > 0 else 0}px;height:100%;'
            f'background:{colours[index] if not is_background else "#9ca3af"}"></span></span>'
            f'<span style="text-align:right;font-variant-numeric:tabular-nums">{100 * share:.1f}%</span>'
            "</div>"
        )
    warning = (
        f'<div style="color:#b91c1c;font-weight:600;margin-bottom:4px">{UNTRAINED_NOTE}</div>' if untrained else ""
    )
    return f'<div id="legend-entries">{warning}{"".join(rows)}</div>'


def patch_names_html(named: PointNames | None, method: str, own_names: Sequence[str], *, untrained: bool) -> str:
    """The top names of the picked patch after calibration beside vanilla CLIP's, each with its cosine; the
    visitor's own classes in bold. Two columns that stack on a phone."""
    if named is None:
        presets = number_word(len(VOCABULARY_PRESETS))
        return (
            f'<div class="patch-names-pending">The names to compare with (the {presets} vocabulary presets, '
            f"{len(builtin_vocabulary())} names) are still being embedded on this server; click the patch again in a "
            "minute.</div>"
        )
    own = {name.lower() for name in own_names}

    def column(title: str, matches: Sequence[NameMatch], kind: str) -> str:
        rows = "".join(
            f'<li data-name="{html.escape(match.name)}">'
            f"{'<b>' if match.name.lower() in own else ''}{html.escape(match.name)}"
            f"{'</b>' if match.name.lower() in own else ''} "
            f'<span style="color:#6b7280;font-variant-numeric:tabular-nums">{match.cosine:.3f}</span></li>'
            for match in matches
        )
        return (
            f'<div class="patch-names-{kind}" style="flex:1 1 12em;min-width:12em">'
            f'<b>{html.escape(title)}</b><ol style="margin:4px 0 0 1.4em;padding:0">{rows}</ol></div>'
        )

    warning = f'<div style="color:#b91c1c;font-weight:600">{UNTRAINED_NOTE}</div>' if untrained else ""
    return (
        f'<div class="patch-names">{warning}<div style="margin-bottom:4px">What is this patch? The 10 names whose '
        "text embedding is closest (cosine) to the patch's embedding, among the vocabulary presets and your "
        "classes (bold).</div>"
        '<div style="display:flex;flex-wrap:wrap;gap:16px">'
        f"{column(f'{method_label(method)} (as run)', named.calibrated, 'calibrated')}"
        f"{column('vanilla CLIP', named.vanilla, 'vanilla')}</div></div>"
    )


def timings_html(segmentation: Segmentation, timings: RequestTimings) -> str:
    """What ran (method and stages), on what, where the visitor's wait went, and the notices the engine
    attached."""
    steps = html.escape(timings.line())
    notices = list(segmentation.notices)
    if timings.image is None:
        notices.append(
            "image side reused from the previous run (same image and settings): only the text side and "
            "post-processing ran"
        )
    notice_html = "".join(f"<li>{html.escape(notice)}</li>" for notice in notices)
    return (
        f"<div id='timings-table' style='font-size:0.9em'><b id='run-description'>"
        f"{html.escape(describe_run(segmentation))}</b> on "
        f"{html.escape(segmentation.model_name)}, {segmentation.image.shape[1]}x{segmentation.image.shape[0]} px, "
        f"{len(segmentation.windows)} window(s)<div id='request-timings' style='margin-top:4px'>{steps}</div>"
        f"{'<ul style=margin-top:4px>' + notice_html + '</ul>' if notice_html else ''}</div>"
    )


def window_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The image under `box`, padded with grey where the box reaches past the image, so the patch grid fits."""
    y0, x0, y1, x1 = box
    crop = np.full((y1 - y0, x1 - x0, 3), 128, dtype=np.uint8)
    inside = image[y0:y1, x0:x1]
    crop[: inside.shape[0], : inside.shape[1]] = inside
    return crop


def agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of pixels with the same label."""
    return float(np.mean(labels == reference))


def configuration_name(caption: str) -> str:
    """The configuration's name from its gallery caption ("NACLIP · 12%" -> "NACLIP")."""
    return caption.rsplit(CAPTION_SEPARATOR, 1)[0]


def ablation_views(
    shared_seconds: float, runs: Sequence[AblationRun]
) -> tuple[list[tuple[Image.Image, str]], dict[str, Any]]:
    """The ablation as a gallery (short captions: name and agreement) and a table whose timings are honest: the
    shared frozen pass once, then each configuration's own seconds (its last block and its prediction)."""
    reference = runs[0].segmentation.labels
    gallery, rows = [], [["shared pass (blocks 1 to L-1), once", round(shared_seconds, 3), None]]
    for run in runs:
        same = 100 * agreement(run.segmentation.labels, reference)
        gallery.append(
            (overlay_picture(run.segmentation, GALLERY_OPACITY), f"{run.name}{CAPTION_SEPARATOR}{same:.0f}%")
        )
        rows.append([run.name, round(run.own_seconds, 3), round(same, 2)])
    table = {"headers": ["configuration", "own time (s)", "agrees with full SC-CLIP (%)"], "data": rows}
    return gallery, table
