"""The page: inputs on the left, results and the inside views in tabs on the right, and the event wiring.

Every component a test touches has an `elem_id`. The heavy events (segment, the re-run that opening a share link
starts, ablation, video) share a concurrency group and a bounded queue, go to their handlers at once, where each visitor
holds at most a few places and the admitted ones wait for one of the model's slots (`demo.admission`), and take
turns at the model in small steps (`demo.host.ModelTurns`); cheap re-render events read the visitor's result from
the session store and only keep the latest trigger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from demo.admission import HEAVY_ADMITTED
from demo.events import Events
from demo.events.batch import Batch
from demo.events.common import output_names
from demo.events.comparing import Ablation, Choices, Compared
from demo.events.inside import PatchNames, PatchViews
from demo.events.live import LiveFrame, live_sides
from demo.events.rendering import Cleared, Redrawn, Relabelled, Shown
from demo.events.segmenting import DEFAULT_BACKGROUND, Downloads, ExamplePreview
from demo.events.sharing import OpenedLink
from demo.events.video import VideoOutputs, VideoViews
from demo.host import ModelHost
from demo.inputs import DEFAULT_BETA, DEFAULT_DETECTOR, DEFAULT_METHOD
from demo.labels import (
    COMPARISON_METHODS,
    DEFAULT_COMPARISONS,
    DETECTOR_LABELS,
    METHOD_LABELS,
    METHOD_REFINEMENTS,
    STAGE_LABELS,
    TEMPLATE_LABELS,
    own_ablation_note,
    refine_help,
    refine_labels,
)
from demo.outputs import ShareLinkCheck, complete_share_links, share_links_folder
from demo.sessions import SESSION_TTL_S, SessionStore
from scclip_core import VOCABULARY_PRESETS, Stages, render
from scclip_core.methods import METHOD_SPECS

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
QUEUE_MAX_SIZE = 16
CHEAP_CONCURRENCY = 4
MAX_UPLOAD_SIZE = "25mb"
UPLOAD_CLEANUP_EVERY_S = 300
GRADIO_SESSION_CAPACITY = 256
Page = dict[str, Any]  # the page's components by name; an event's outputs are named after them
HEAVY: dict[str, Any] = {"preprocess": False, "concurrency_limit": HEAVY_ADMITTED, "concurrency_id": "model"}
CHEAP: dict[str, Any] = {
    "api_visibility": "private",
    "trigger_mode": "always_last",
    "show_progress": "hidden",
    "concurrency_limit": CHEAP_CONCURRENCY,
}
QUIET: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
CSS = """
#overlay img, #anomaly-click img, #similarity-click img { cursor: crosshair; }
#legend { min-height: 40px; }
.footnote { font-size: 0.85em; color: #6b7280; }
.figure-view .icon-button-wrapper { position: static; justify-content: flex-end; margin-bottom: 2px; }
#ablation-gallery .caption-label {
  white-space: normal; overflow: visible; text-overflow: clip; overflow-wrap: anywhere;
}
@media (max-width: 640px) {
  #ablation-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
}
#ablation-table table { table-layout: auto; }
#ablation-table th, #ablation-table td { white-space: normal; overflow-wrap: anywhere; }
"""
INTRO = """
## SC-CLIP Explorer
Training-free open-vocabulary segmentation with **Self-Calibrated CLIP** (Bai et al., 2024, arXiv 2411.15869):
type any classes and segment, switch SC-CLIP's stages off one by one, and look inside the model
(anomaly tokens, mid-layer similarity, per-class probability maps).
"""
SHARE_HELP = (
    "Copies a link to this view (image, classes, settings, tab) that runs it again for whoever opens it: on this "
    f"server, for {SESSION_TTL_S // 60} minutes after the upload."
)
CLASS_HELP = (
    "Use `;` or a new line between classes and `,` between synonyms (the first one is shown), "
    "e.g. `cat; dog, puppy; sofa, couch`."
)


def load_examples() -> tuple[list[list[str]], list[str]]:
    """Rows (image path, classes, background words) and titles from assets/examples.json."""
    entries = json.loads((ASSETS_DIR / "examples.json").read_text())
    rows = [
        [
            str(ASSETS_DIR / entry["image"]),
            entry["classes"],
            entry.get("background", DEFAULT_BACKGROUND),
        ]
        for entry in entries
    ]
    return rows, [entry["title"] for entry in entries]


def launch_options() -> dict[str, Any]:
    """Keyword arguments for `demo.launch()`: the page's style (Gradio 6 takes theme and css at launch), its limits,
    and the check of share links as they are opened (`demo.outputs.ShareLinkCheck`)."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="amber"),
        "css": CSS,
        "max_file_size": MAX_UPLOAD_SIZE,
        "state_session_capacity": GRADIO_SESSION_CAPACITY,
        "app_kwargs": {"middleware": [Middleware(ShareLinkCheck)]},
    }


def limits_text(host: ModelHost, events: Events) -> str:
    """The service's limits, as the page states them."""
    return (
        f"Limits: {host.limits.describe()}. Images and video frames are processed with the long side at most "
        f"{host.config.max_input_side} px (label maps come back at the input size); "
        f"at most {events.admission.max_per_visitor} requests per visitor waiting or running at once. "
        f"Results are kept on the server for {SESSION_TTL_S // 60} minutes after their last use, within "
        f"{events.store.budget_bytes >> 20} MB for all visitors together (the oldest go first)."
    )


def segment_description(host: ModelHost, events: Events) -> str:
    """What /segment does, takes and returns, for the API page and for agents (the MCP tool's description)."""
    return (
        "Open-vocabulary semantic segmentation of one image with SC-CLIP (training-free CLIP) or one of the methods "
        "it is compared with (`method`; `model_info` lists them): give an image and any class names; every pixel "
        "gets one of them (or the background class). Returns two things: (1) the "
        "label map, a palette PNG at the input size whose pixel value is an index into summary['classes']; "
        "(2) a JSON summary: 'classes', 'shares' (fraction of the image per class), 'legend' (index, name, colour, "
        "share), what ran ('description', 'method', 'stages', 'refine'), 'timings' (the seconds waited: queue, text, "
        "image or 'reused', prediction, other, total), 'notices' and 'coco' (where to get the label map's COCO "
        "masks: the /coco endpoint in the same session). When "
        "'untrained_weights' is true the result is meaningless. Errors come back as messages that say what to "
        f"fix. {limits_text(host, events)}"
    )


def components(page: Page, outputs: type[tuple[Any, ...]]) -> list[Any]:
    """The components an event's outputs (a NamedTuple) fill, in its field order."""
    return [page[name] for name in output_names(outputs)]


def build_inputs(host: ModelHost) -> Page:
    """The left column: image, classes, background, method and stages, the run button and share link."""
    page: Page = {}
    page["image"] = gr.Image(
        label="Image (upload, paste or pick an example)",
        type="filepath",
        sources=["upload", "clipboard"],
        height=300,
        elem_id="input-image",
    )
    page["examples_anchor"] = gr.Column(elem_id="examples-column")
    page["vocabulary"] = gr.Dropdown(
        choices=[("my classes", ""), *((preset.label, preset.key) for preset in VOCABULARY_PRESETS)],
        value="",
        label="Vocabulary",
        info="A benchmark's class list fills the box below (its text is precomputed); edit it freely.",
        elem_id="vocabulary-preset",
    )
    page["classes"] = gr.Textbox(
        label="Classes",
        info=CLASS_HELP,
        placeholder="cat; dog, puppy; sofa, couch",
        lines=3,
        elem_id="classes",
    )
    with gr.Accordion("Background", open=False, elem_id="background-accordion"):
        page["background"] = gr.Textbox(
            value=DEFAULT_BACKGROUND,
            label="Background words (one 'background' class; empty = no background class)",
            lines=3,
            elem_id="background-words",
        )
        page["area_threshold"] = gr.Slider(
            0.0,
            0.5,
            value=0.0,
            step=0.01,
            label="Area threshold (drop classes covering at most this share of the foreground; 0 = off)",
            elem_id="area-threshold",
        )
    with gr.Accordion("Method and stages (ablate)", open=False, elem_id="method-accordion"):
        page["method"] = gr.Dropdown(
            choices=[(METHOD_LABELS[name], name) for name in METHOD_SPECS],
            value=DEFAULT_METHOD,
            label="Method",
            elem_id="method",
        )
        page["stages"] = gr.CheckboxGroup(
            choices=[(STAGE_LABELS[name], name) for name in Stages.names()],
            value=list(Stages.names()),
            label="SC-CLIP stages",
            info="Untick a stage to switch it off (SC-CLIP only).",
            elem_id="stages",
        )
        with gr.Row():
            page["detector"] = gr.Radio(
                choices=[(label, name) for name, label in DETECTOR_LABELS.items()],
                value=DEFAULT_DETECTOR,
                label="Anomaly detector",
                elem_id="detector",
            )
            page["beta"] = gr.Slider(
                0.0, 1.0, value=DEFAULT_BETA, step=0.05, label="β (affinity threshold)", elem_id="beta"
            )
        page["refine"] = gr.Radio(
            choices=[(label, name) for name, label in refine_labels().items()],
            value=METHOD_REFINEMENTS,
            label="Refine the logits",
            info=f"{refine_help()} Also used by the ablation.",
            elem_id="refine",
        )
        page["templates"] = gr.Radio(
            choices=[(label, name) for name, label in TEMPLATE_LABELS.items()],
            value=host.config.templates,
            label="Prompt templates (each class name is encoded once per template)",
            elem_id="templates",
        )
    page["run"] = gr.Button("Segment", variant="primary", elem_id="run")
    page["status"] = gr.Markdown("", elem_id="run-status")
    with gr.Row(elem_id="share-row"):
        page["share"] = gr.DeepLinkButton("Share this view", copied_value="Link copied", size="md", scale=0)
        gr.Markdown(SHARE_HELP, elem_classes="footnote")
    page["open_view"] = gr.Textbox("segment", visible=False, elem_id="open-view")
    page["restore_token"] = gr.Textbox("", visible=False, elem_id="restore-token")
    return page


def build_segment_tab(host: ModelHost) -> Page:
    """The overlay with its opacity, threshold and hidden classes, the legend, timings and downloads."""
    page: Page = {}
    with gr.Tab("Segment", id="segment", elem_id="tab-segment") as page["tab_segment"]:
        page["overlay"] = gr.Image(
            label="Overlay",
            show_label=False,
            format="png",
            interactive=False,
            buttons=["download", "fullscreen"],
            height=400,
            elem_id="overlay",
        )
        with gr.Row():
            page["opacity"] = gr.Slider(
                0.0, 1.0, value=render.DEFAULT_OPACITY, step=0.05, label="Opacity", elem_id="opacity"
            )
            page["threshold"] = gr.Slider(
                0.0,
                1.0,
                value=host.default_prob_threshold,
                step=0.01,
                label="Background threshold",
                info="Pixels whose best class probability is lower go to the background.",
                elem_id="threshold",
            )
        page["hidden"] = gr.CheckboxGroup(choices=[], value=[], label="Hide classes", elem_id="hidden-classes")
        with gr.Row(equal_height=False):
            page["legend"] = gr.HTML(label="Legend and share of the image", elem_id="legend")
            page["timings"] = gr.HTML(label="Timings", elem_id="timings")
        with gr.Row(equal_height=False) as page["downloads"]:
            page["label_file"] = gr.File(label="Label map (palette PNG, value = class index)", elem_id="label-file")
            page["summary_file"] = gr.File(label="JSON summary", elem_id="summary-file")
        with gr.Accordion("JSON summary", open=False):
            page["summary_json"] = gr.JSON(label="Summary", elem_id="summary")
    return page


def figure(elem_id: str, label: str, **options: Any) -> gr.Image:
    """A matplotlib figure of the inside views, with its own download button above it."""
    return gr.Image(
        label=label,
        interactive=False,
        format="png",
        show_label=False,
        elem_id=elem_id,
        elem_classes="figure-view",
        **options,
    )


def build_inside_tabs() -> Page:
    """The Anomalies and Similarity tabs: a picture to pick a patch on, and the figures of that patch."""
    page: Page = {}
    with gr.Tab("Anomalies", id="anomaly", elem_id="tab-anomaly") as page["tab_anomaly"]:
        gr.Markdown(
            "A few patch tokens of CLIP's penultimate layer are outliers that grab attention and "
            "carry little local information. SC-CLIP finds them with LOF and replaces each by the "
            "mean of its neighbours. Click the image to pick a patch."
        )
        page["anomaly_figure"] = figure("anomaly-figure", "Anomaly tokens, LOF scores and token norms")
        page["patch_message"] = gr.Markdown("", elem_id="patch-message")
        page["anomaly_names"] = gr.HTML("", elem_id="anomaly-patch-names")
        with gr.Row(equal_height=False):
            page["anomaly_click"] = gr.Image(
                label="Pick a patch", interactive=False, format="png", height=280, elem_id="anomaly-click", scale=1
            )
            page["attention_figure"] = figure("attention-figure", "Last-block attention of the picked patch", scale=2)
    with gr.Tab("Similarity", id="similarity", elem_id="tab-similarity") as page["tab_similarity"]:
        gr.Markdown(
            "SC-CLIP reuses the mid layer's patch similarities, which are spatially coherent, to "
            "calibrate the last layer. Green contours: the β threshold; pairs inside are aggregated."
        )
        page["similarity_message"] = gr.Markdown("", elem_id="similarity-message")
        page["similarity_names"] = gr.HTML("", elem_id="similarity-patch-names")
        page["similarity_click"] = gr.Image(
            label="Pick a patch", interactive=False, format="png", height=280, elem_id="similarity-click"
        )
        page["similarity_figure"] = figure("similarity-figure", "Similarity of the picked patch")
    return page


def build_heatmaps_tab() -> Page:
    page: Page = {}
    with gr.Tab("Heatmaps", id="heatmaps", elem_id="tab-heatmaps") as page["tab_heatmaps"]:
        gr.Markdown("One probability map per class, min-max normalised, jet colours over the image.")
        page["heatmap_gallery"] = gr.Gallery(
            label="Per-class probability", columns=3, height="auto", format="png", elem_id="heatmaps"
        )
    return page


def build_ablation_tab() -> Page:
    """The ablation's comparison methods, gallery, before/after slider and table."""
    page: Page = {}
    with gr.Tab("Ablation", id="ablation", elem_id="tab-ablation") as page["tab_ablation"]:
        note = own_ablation_note()
        gr.Markdown(
            "Runs full SC-CLIP, SC-CLIP with each stage removed in turn, vanilla CLIP and the chosen "
            "comparison methods, each followed by its own ablation, on the image and classes on the left, and "
            f"compares each with full SC-CLIP pixel by pixel.{f' **Note.** {note}' if note else ''}",
            elem_id="ablation-about",
        )
        page["comparisons"] = gr.CheckboxGroup(
            choices=[(METHOD_LABELS[name], name) for name in COMPARISON_METHODS],
            value=list(DEFAULT_COMPARISONS),
            label="Comparison methods",
            elem_id="comparisons",
        )
        page["run_ablation"] = gr.Button("Run ablation", variant="primary", elem_id="run-ablation")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                page["ablation_gallery"] = gr.Gallery(
                    label="Side by side",
                    columns=2,
                    height="auto",
                    format="png",
                    preview=False,
                    elem_id="ablation-gallery",
                )
            with gr.Column(scale=1, min_width=300, elem_id="compare-column"):
                page["compare_left"] = gr.Dropdown(choices=[], label="Slider: left", elem_id="compare-left")
                page["compare_right"] = gr.Dropdown(choices=[], label="Slider: right", elem_id="compare-right")
                page["compare_slider"] = gr.ImageSlider(
                    label="Before / after",
                    show_label=False,
                    interactive=False,
                    format="png",
                    max_height=640,
                    elem_id="compare-slider",
                )
                page["compare_message"] = gr.Markdown(
                    "Run the ablation, then choose two of its configurations to compare.",
                    elem_id="compare-message",
                )
        page["ablation_table"] = gr.Dataframe(
            label="Timings and agreement",
            interactive=False,
            wrap=True,
            max_height=720,
            elem_id="ablation-table",
        )
    return page


def build_video_tab(host: ModelHost) -> Page:
    """A clip, its run button and the hosted limits; the overlay video, the legend, the shares over time, the zip."""
    page: Page = {}
    limits = host.limits
    with gr.Tab("Video", id="video", elem_id="tab-video") as page["tab_video"]:
        gr.Markdown(
            "Segments a clip frame by frame with the classes and settings on the left (method, stages, refinement, "
            f"thresholds). Clips of at most {limits.max_video_seconds:g} s; at most {limits.max_video_frames} frames "
            "are segmented, sampled evenly beyond that. Each frame takes its turn at the model, so other visitors "
            "are not kept waiting behind a whole video.",
            elem_id="video-about",
        )
        page["video_input"] = gr.Video(
            label="Video (mp4, mov, webm, avi or gif)", sources=["upload"], height=260, elem_id="video-input"
        )
        page["run_video"] = gr.Button("Segment the video", variant="primary", elem_id="run-video")
        page["video_output"] = gr.Video(label="Overlay", interactive=False, height=320, elem_id="video-output")
        with gr.Row(equal_height=False):
            page["video_legend"] = gr.HTML(label="Legend and mean share over the clip", elem_id="video-legend")
            page["video_zip"] = gr.File(
                label="Label maps (frame_000000.png...), shares per frame and COCO file (zip)", elem_id="video-zip"
            )
        page["video_shares"] = figure("video-shares", "Each class's share of the frame over time")
        with gr.Accordion("JSON summary", open=False):
            page["video_summary"] = gr.JSON(label="Video summary", elem_id="video-summary")
    return page


def build_examples(page: Page, events: Events, host: ModelHost) -> None:
    """The example photos under the image; with trained weights their default runs are cached on first use."""
    example_rows, _ = load_examples()
    cache_examples = host.model is not None and not host.is_random
    with page["examples_anchor"]:
        examples = gr.Examples(
            examples=example_rows,
            inputs=[page["image"], page["classes"], page["background"]],
            outputs=components(page, ExamplePreview),
            fn=events.segmenting.example_preview,
            cache_examples=cache_examples,
            cache_mode="lazy" if cache_examples else None,
            examples_per_page=8,
            visible_columns=[0],
            label="Examples: click one (public-domain and CC0 photos; see assets/ATTRIBUTION.md)",
            elem_id="examples",
        )
    examples.load_input_event.then(lambda: None, outputs=page["point"], api_visibility="private")
    page["examples"] = examples


SEGMENT_INPUTS = (
    "image",
    "classes",
    "background",
    "threshold",
    "method",
    "stages",
    "detector",
    "beta",
    "area_threshold",
    "templates",
    "refine",
    "refine_edges",
)


def wire_segment(demo: gr.Blocks, page: Page, events: Events, description: str) -> None:
    """Segment (the public /segment) and the same run that opening a share link starts; after either, the
    result is drawn, or cleared when the run failed."""
    inputs = [page[name] for name in SEGMENT_INPUTS]
    segmented = gr.on(
        [page["run"].click, page["classes"].submit],
        events.segmenting.segment,
        inputs=inputs,
        outputs=components(page, Downloads),
        api_name="segment",
        api_description=description,
        **HEAVY,
    )
    # A share link restores the inputs and views in the page; this session has no result yet, so the same run
    # starts once the load event has seen the link (see ShareEvents.open_shared_link).
    restored = page["restore_token"].change(
        events.sharing.segment_shared,
        inputs=inputs,
        outputs=components(page, Downloads),
        api_visibility="private",
        **HEAVY,
    )
    demo.load(
        events.sharing.open_shared_link,
        inputs=[page["image"], page["classes"], page["open_view"]],
        outputs=components(page, OpenedLink),
        api_visibility="private",
        show_progress="hidden",
        preprocess=False,
        queue=False,
    )
    for run_event, show, show_inputs in [
        (segmented, events.rendering.show_result, [page["opacity"]]),
        (restored, events.rendering.show_shared, [page["opacity"], page["hidden"]]),
    ]:
        run_event.failure(events.rendering.clear_results, outputs=components(page, Cleared), queue=False, **QUIET)
        run_event.success(show, inputs=show_inputs, outputs=components(page, Shown), **QUIET).success(
            events.inside.patch_views, inputs=page["point"], outputs=components(page, PatchViews), **QUIET
        ).success(
            events.inside.patch_names, inputs=page["point"], outputs=components(page, PatchNames), **QUIET
        ).success(events.rendering.heatmaps, outputs=page["heatmap_gallery"], **QUIET)


def wire_sharing(page: Page, events: Events) -> None:
    """Share: old snapshots go on each click, and the server follows the open tab so the link carries it."""
    page["share"].click(events.sharing.forget_old_share_links, queue=False, **QUIET)
    tabs = [page[name] for name in ("tab_segment", "tab_anomaly", "tab_similarity", "tab_heatmaps", "tab_ablation")]
    tab_ids = {tab.label: tab.id for tab in tabs}

    def opened(event: gr.SelectData) -> Any:
        return tab_ids.get(event.value, gr.skip()) if isinstance(event.value, str) else gr.skip()

    gr.on([tab.select for tab in tabs], opened, outputs=page["open_view"], queue=False, **QUIET)


def wire_rendering(page: Page, events: Events, not_a_tool: str) -> None:
    """Opacity and hidden classes redraw; thresholds relabel as /rethreshold (the page's own relabel, which also
    fills the COCO download, is wired by `wire_coco` once that exists); no model."""
    gr.on(
        [page["opacity"].input, page["hidden"].input],
        events.rendering.rerender,
        inputs=[page["opacity"], page["hidden"]],
        outputs=components(page, Redrawn),
        **CHEAP,
    )
    rethreshold_api = gr.Button(visible=False, elem_id="rethreshold-api")
    rethreshold_api.click(
        events.rendering.rethreshold_api,
        inputs=[page["threshold"], page["area_threshold"]],
        outputs=components(page, Downloads),
        api_name="rethreshold",
        api_visibility=not_a_tool,
        api_description="Relabel this session's last /segment result under new thresholds, without the model.",
        concurrency_limit=CHEAP_CONCURRENCY,
    )


def build_coco_download(page: Page) -> Page:
    """The COCO file of the label map, beside the label PNG and the JSON summary (created after every older
    component, so that theirs keep their ids in share links)."""
    with page["downloads"]:
        return {"coco_file": gr.File(label="COCO masks (RLE JSON of the label map)", elem_id="coco-file")}


def wire_coco(page: Page, events: Events, not_a_tool: str) -> None:
    """Thresholds relabel the page's result, downloads included; /coco returns the session's COCO file; a picked
    example (whose cached preview has no COCO file) empties it."""
    page["examples"].load_input_event.then(lambda: None, outputs=page["coco_file"], **QUIET)
    gr.on(
        [page["threshold"].input, page["area_threshold"].input],
        events.rendering.rethreshold,
        inputs=[page["threshold"], page["area_threshold"], page["opacity"], page["hidden"]],
        outputs=components(page, Relabelled),
        api_name="rethreshold_view",
        **CHEAP,
    )
    gr.Button(visible=False, elem_id="coco-api").click(
        events.rendering.coco_api,
        outputs=page["coco_file"],
        api_name="coco",
        api_description="The COCO file (RLE masks of the label map) of this session's last /segment or /rethreshold.",
        api_visibility=not_a_tool,
        concurrency_limit=CHEAP_CONCURRENCY,
    )


def build_batch_tab(host: ModelHost) -> Page:
    """The Batch tab: several images, one run button, the overlays, the shares table and one zip of the results."""
    batch: Page = {}
    with gr.Tab("Batch", id="batch", elem_id="tab-batch") as batch["tab_batch"]:
        gr.Markdown(
            "Segments several images with the classes and settings on the left, each as **Segment** does: at most "
            f"{host.limits.max_batch_files} images per request. A file that cannot be segmented says why in the "
            "table; the others still run. The zip holds each image's label map and JSON summary, and one COCO file "
            "for the batch."
        )
        batch["batch_input"] = gr.File(
            label=f"Images (at most {host.limits.max_batch_files} per request)",
            file_count="multiple",
            file_types=["image"],
            elem_id="batch-input",
        )
        batch["run_batch"] = gr.Button("Segment the batch", variant="primary", elem_id="run-batch")
        batch["batch_status"] = gr.Markdown("", elem_id="batch-status")
        batch["batch_gallery"] = gr.Gallery(
            label="Overlays", columns=4, height="auto", format="png", preview=False, elem_id="batch-gallery"
        )
        batch["batch_table"] = gr.Dataframe(
            label="Share of each image per class", interactive=False, wrap=True, elem_id="batch-table"
        )
        batch["batch_zip"] = gr.File(label="Label maps, JSON summaries and COCO file (zip)", elem_id="batch-zip")
    return batch


def wire_batch(page: Page, events: Events, not_a_tool: str) -> None:
    """The batch (/segment_batch) with the left column's classes and settings."""
    page["run_batch"].click(
        events.batch.segment_batch,
        inputs=[page["batch_input"], *(page[name] for name in SEGMENT_INPUTS[1:])],
        outputs=components(page, Batch),
        api_name="segment_batch",
        api_description=(
            "Segment several images with one class list, each as /segment does: overlays, a table of class shares "
            "per image (a bad file says why) and one zip of label maps, JSON summaries and a COCO file."
        ),
        api_visibility=not_a_tool,
        **HEAVY,
    )


def wire_inside(page: Page, events: Events) -> None:
    """A click on any picture of the image picks the patch of the inside views."""
    gr.on(
        [page["overlay"].select, page["anomaly_click"].select, page["similarity_click"].select],
        events.inside.select_point,
        outputs=page["point"],
        **CHEAP,
    ).success(
        events.inside.patch_views,
        inputs=page["point"],
        outputs=components(page, PatchViews),
        **CHEAP,
    ).success(events.inside.patch_names, inputs=page["point"], outputs=components(page, PatchNames), **CHEAP)


def method_controls(method: str) -> list[Any]:
    """The stage checkboxes, the detector and β are live only for a method that reads them (SC-CLIP)."""
    spec = METHOD_SPECS[method]
    return [
        gr.update(interactive=spec.stages),
        gr.update(interactive="detector" in spec.settings),
        gr.update(interactive="beta" in spec.settings),
    ]


def wire_inputs(demo: gr.Blocks, page: Page, events: Events) -> None:
    """Vocabulary presets fill the class box, the stage controls follow the method, a closed tab is forgotten."""
    page["vocabulary"].input(
        events.segmenting.preset_classes,
        inputs=page["vocabulary"],
        outputs=page["classes"],
        api_visibility="private",
        queue=False,
    )
    page["classes"].input(
        lambda: "", outputs=page["vocabulary"], api_visibility="private", queue=False, show_progress="hidden"
    )
    page["method"].change(
        method_controls,
        inputs=page["method"],
        outputs=[page["stages"], page["detector"], page["beta"]],
        api_visibility="private",
        queue=False,
    )
    demo.unload(events.segmenting.forget)


def wire_comparing(page: Page, events: Events, not_a_tool: str) -> None:
    """The ablation (/ablation), then the slider's choosers and the slider."""
    page["run_ablation"].click(
        events.comparing.ablate,
        inputs=[
            page[name]
            for name in (
                "image",
                "classes",
                "background",
                "threshold",
                "detector",
                "beta",
                "templates",
                "comparisons",
                "refine",
                "refine_edges",
            )
        ],
        outputs=components(page, Ablation),
        api_name="ablation",
        api_description=(
            "Run full SC-CLIP, each stage removed, vanilla CLIP and comparison methods (each with its own "
            "ablation) side by side, from one shared pass of the frozen blocks."
        ),
        api_visibility=not_a_tool,
        **HEAVY,
    ).success(
        events.comparing.comparison_choices,
        inputs=page["ablation_gallery"],
        outputs=components(page, Choices),
        **QUIET,
    )
    gr.on(
        [page["compare_left"].input, page["compare_right"].input],
        events.comparing.compare,
        inputs=[page["ablation_gallery"], page["compare_left"], page["compare_right"]],
        outputs=components(page, Compared),
        **CHEAP,
    )


def wire_video(page: Page, events: Events, not_a_tool: str) -> None:
    """A clip segmented frame by frame (/segment_video), then its legend and plot from the run's summary."""
    page["run_video"].click(
        events.video.segment_video,
        inputs=[page["video_input"], *(page[name] for name in SEGMENT_INPUTS[1:])],
        outputs=components(page, VideoOutputs),
        api_name="segment_video",
        api_description=(
            f"Segment a video clip of at most {events.host.limits.max_video_seconds:g} s frame by frame (at most "
            f"{events.host.limits.max_video_frames} frames, sampled evenly beyond that), with /segment's classes, "
            "settings and limits: returns the overlay video (H.264 MP4), a zip of the label maps (frame_000000.png "
            "and on), per-frame shares and COCO file, and a JSON summary."
        ),
        api_visibility=not_a_tool,
        **HEAVY,
    ).success(events.video.show, inputs=page["video_summary"], outputs=components(page, VideoViews), **QUIET)


LIVE_STREAMS = 4  # webcam streams running at once; each holds its slot until stopped or `LIVE_TIME_LIMIT_S`
LIVE_TIME_LIMIT_S = 120
LIVE_CAPTURE_EVERY_S = 0.1  # the browser sends a frame this often at most, and never while one is pending
LIVE_INPUTS = (*SEGMENT_INPUTS[1:], "live_side")  # /segment's inputs after the image, then the frame size


def build_live_tab(host: ModelHost) -> Page:
    """The Live tab: the webcam, the frame size, the overlay as it comes, its legend and the achieved frame rate."""
    page: Page = {}
    with gr.Tab("Live", id="live", elem_id="tab-live") as page["tab_live"]:
        gr.Markdown(
            "Your webcam, segmented as it streams with the classes and settings on the left. Frames are segmented "
            f"small (long side {host.limits.live_side} px by default: one window) to keep up; a frame that arrives "
            f"while the previous one runs is dropped. A stream stops after {LIVE_TIME_LIMIT_S} s; start it again "
            "to go on.",
            elem_id="live-about",
        )
        with gr.Row(equal_height=False):
            page["live_input"] = gr.Image(
                label="Webcam",
                sources=["webcam"],
                streaming=True,
                type="numpy",
                height=300,
                webcam_options=gr.WebcamOptions(constraints={"video": {"width": 640, "height": 480}}),
                elem_id="live-input",
            )
            page["live_output"] = gr.Image(
                label="Overlay", show_label=False, interactive=False, height=300, elem_id="live-output"
            )
        page["live_side"] = gr.Dropdown(
            choices=list(live_sides(host.limits)),
            value=host.limits.live_side,
            label="Frame size (long side, px): larger is sharper and slower",
            elem_id="live-side",
        )
        page["live_status"] = gr.Markdown("", elem_id="live-status")
        page["live_legend"] = gr.HTML(label="Legend", elem_id="live-legend")
    return page


def wire_live(demo: gr.Blocks, page: Page, events: Events) -> None:
    """Webcam frames go to the model one at a time per visitor, in their own group of streams (a stream holds its
    slot while it runs, so it must not hold one of /segment's), and take turns at the model with everyone else."""
    page["live_input"].stream(
        events.live.frame,
        inputs=[page["live_input"], *(page[name] for name in LIVE_INPUTS)],
        outputs=components(page, LiveFrame),
        stream_every=LIVE_CAPTURE_EVERY_S,
        time_limit=LIVE_TIME_LIMIT_S,
        concurrency_limit=LIVE_STREAMS,
        concurrency_id="live",
        show_progress="hidden",
        api_visibility="private",
    )
    demo.unload(events.live.forget)


def build_interface(host: ModelHost, store: SessionStore | None = None, *, mcp: bool = False) -> gr.Blocks:
    """Lay out the page, one builder per panel, and wire its events to `Events(host, store)`, one family at a time.

    With `mcp`, Gradio's MCP server makes every public endpoint a tool: /segment and /model_info stay public,
    while /ablation, /segment_video and /rethreshold (which reads a session's kept result, meaningless to an agent)
    become undocumented, still callable from gradio_client.
    """
    events = Events(host, store)
    not_a_tool = "undocumented" if mcp else "public"
    with gr.Blocks(title="SC-CLIP Explorer", delete_cache=(UPLOAD_CLEANUP_EVERY_S, SESSION_TTL_S)) as demo:
        page: Page = {"point": gr.State(None, time_to_live=SESSION_TTL_S)}
        gr.HTML(host.banner_html(), elem_id="status-banner")
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                page.update(build_inputs(host))
            with gr.Column(scale=6, min_width=420):
                with gr.Tabs(elem_id="views") as page["views"]:
                    page.update(build_segment_tab(host))
                    page.update(build_inside_tabs())
                    page.update(build_heatmaps_tab())
                    page.update(build_ablation_tab())
        gr.Markdown(
            f"{limits_text(host, events)}\n\n"
            "API: `gradio_client.Client(url).predict(handle_file('photo.jpg'), 'cat; dog', api_name='/segment')` "
            "returns the label PNG and a JSON summary.",
            elem_classes="footnote",
            elem_id="limits",
        )
        build_examples(page, events, host)
        wire_rendering(page, events, not_a_tool)
        gr.api(events.segmenting.model_info, api_name="model_info", queue=False)
        # The older "Refine edges" switch, never shown: API calls that still send refine_edges=True get PAMR. The
        # page's last component, so every other one keeps its id in share links saved before the refine choice.
        page["refine_edges"] = gr.Checkbox(False, visible=False, elem_id="refine-edges")
        page.update(build_coco_download(page))
        with page["views"]:  # re-entered: components made after all others keep every older id in share links
            page.update(build_video_tab(host))
            page.update(build_live_tab(host))
            page.update(build_batch_tab(host))
        wire_coco(page, events, not_a_tool)
        wire_batch(page, events, not_a_tool)
        wire_segment(demo, page, events, segment_description(host, events))
        wire_sharing(page, events)
        wire_inside(page, events)
        wire_inputs(demo, page, events)
        wire_comparing(page, events, not_a_tool)
        wire_video(page, events, not_a_tool)
        wire_live(demo, page, events)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CHEAP_CONCURRENCY)
    complete_share_links(share_links_folder(), demo.config["components"])
    return demo
