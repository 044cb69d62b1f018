"""The page: inputs on the left, results and the inside views in tabs on the right, and the event wiring.

Every component a test touches has an `elem_id`. The heavy events (segment, the re-run that opening a share link
starts, ablation) share a concurrency group and a bounded queue, and take turns at the model in small steps
(`demo.host.ModelTurns`); cheap re-render events read the visitor's result from the session store and only keep
the latest trigger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from demo.handlers import Handlers
from demo.host import ModelHost
from demo.inputs import DEFAULT_BETA, TEMPLATE_LABELS
from demo.sessions import SESSION_TTL_S, SessionStore
from demo.views import COMPARISON_METHODS, METHOD_LABELS, STAGE_LABELS
from scclip_core import DEFAULT_BACKGROUND_WORDS, METHODS, VOCABULARY_PRESETS, Stages

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
QUEUE_MAX_SIZE = 16
HEAVY_CONCURRENCY = 4
CHEAP_CONCURRENCY = 4
MAX_UPLOAD_SIZE = "25mb"
UPLOAD_CLEANUP_EVERY_S = 300
GRADIO_SESSION_CAPACITY = 256
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
            entry.get("background", ", ".join(DEFAULT_BACKGROUND_WORDS)),
        ]
        for entry in entries
    ]
    return rows, [entry["title"] for entry in entries]


def launch_options() -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` that style the page (Gradio 6 takes theme and css at launch)."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="amber"),
        "css": CSS,
        "max_file_size": MAX_UPLOAD_SIZE,
        "state_session_capacity": GRADIO_SESSION_CAPACITY,
    }


def limits_text(host: ModelHost, store: SessionStore) -> str:
    """The service's limits, as the page states them."""
    return (
        f"Limits: {host.limits.describe()}, processed with "
        f"the long side at most {host.config.max_input_side} px (the label map comes back at the input size). "
        f"Results are kept on the server for {SESSION_TTL_S // 60} minutes after their last use, within "
        f"{store.budget_bytes >> 20} MB for all visitors together (the oldest go first)."
    )


def segment_description(host: ModelHost, store: SessionStore) -> str:
    """What /segment does, takes and returns, for the API page and for agents (the MCP tool's description)."""
    return (
        "Open-vocabulary semantic segmentation of one image with SC-CLIP (training-free CLIP): give an image and "
        "any class names; every pixel gets one of them (or the background class). Returns two things: (1) the "
        "label map, a palette PNG at the input size whose pixel value is an index into summary['classes']; "
        "(2) a JSON summary: 'classes', 'shares' (fraction of the image per class), 'legend' (index, name, colour, "
        "share), what ran ('description', 'method', 'stages'), 'timings' in seconds and 'notices'. When "
        "'untrained_weights' is true the result is meaningless. Errors come back as messages that say what to "
        f"fix. {limits_text(host, store)}"
    )


def build_interface(host: ModelHost, store: SessionStore | None = None, *, mcp: bool = False) -> gr.Blocks:
    """Lay out the page and wire its events to `Handlers(host, store)`.

    With `mcp`, Gradio's MCP server makes every public endpoint a tool: /segment and /model_info stay public,
    while /ablation and /rethreshold (which reads a session's kept result, meaningless to an agent) become
    undocumented, still callable from gradio_client.
    """
    handlers = Handlers(host, store)
    not_a_tool = "undocumented" if mcp else "public"
    example_rows, _ = load_examples()
    cache_examples = host.model is not None and not host.is_random

    with gr.Blocks(title="SC-CLIP Explorer", delete_cache=(UPLOAD_CLEANUP_EVERY_S, SESSION_TTL_S)) as demo:
        point = gr.State(None, time_to_live=SESSION_TTL_S)

        gr.HTML(host.banner_html(), elem_id="status-banner")
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                image = gr.Image(
                    label="Image (upload, paste or pick an example)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=300,
                    elem_id="input-image",
                )
                examples_anchor = gr.Column(elem_id="examples-column")
                vocabulary = gr.Dropdown(
                    choices=[("my classes", ""), *((preset.label, preset.key) for preset in VOCABULARY_PRESETS)],
                    value="",
                    label="Vocabulary",
                    info="A benchmark's class list fills the box below (its text is precomputed); edit it freely.",
                    elem_id="vocabulary-preset",
                )
                classes = gr.Textbox(
                    label="Classes",
                    info=CLASS_HELP,
                    placeholder="cat; dog, puppy; sofa, couch",
                    lines=3,
                    elem_id="classes",
                )
                with gr.Accordion("Background", open=False, elem_id="background-accordion"):
                    background = gr.Textbox(
                        value=", ".join(DEFAULT_BACKGROUND_WORDS),
                        label="Background words (one 'background' class; empty = no background class)",
                        lines=3,
                        elem_id="background-words",
                    )
                    area_threshold = gr.Slider(
                        0.0,
                        0.5,
                        value=0.0,
                        step=0.01,
                        label="Area threshold (drop classes covering at most this share of the foreground; 0 = off)",
                        elem_id="area-threshold",
                    )
                with gr.Accordion("Method and stages (ablate)", open=False, elem_id="method-accordion"):
                    method = gr.Dropdown(
                        choices=[(METHOD_LABELS[name], name) for name in METHODS],
                        value="sc-clip",
                        label="Method",
                        elem_id="method",
                    )
                    stages = gr.CheckboxGroup(
                        choices=[(STAGE_LABELS[name], name) for name in Stages.names()],
                        value=list(Stages.names()),
                        label="SC-CLIP stages",
                        info="Untick a stage to switch it off (SC-CLIP only).",
                        elem_id="stages",
                    )
                    with gr.Row():
                        detector = gr.Radio(
                            choices=[("LOF", "lof"), ("top L2 norm", "l2norm")],
                            value="lof",
                            label="Anomaly detector",
                            elem_id="detector",
                        )
                        beta = gr.Slider(
                            0.0, 1.0, value=DEFAULT_BETA, step=0.05, label="β (affinity threshold)", elem_id="beta"
                        )
                    refine_edges = gr.Checkbox(
                        value=False,
                        label="Refine edges (PAMR)",
                        info="10 steps of pixel-adaptive mask refinement at dilations 8 and 16, as NACLIP reports; "
                        "sharper edges, a few seconds more. Also used by the ablation.",
                        elem_id="refine-edges",
                    )
                    templates = gr.Radio(
                        choices=[(label, name) for name, label in TEMPLATE_LABELS.items()],
                        value=host.config.templates,
                        label="Prompt templates (each class name is encoded once per template)",
                        elem_id="templates",
                    )
                run = gr.Button("Segment", variant="primary", elem_id="run")
                status = gr.Markdown("", elem_id="run-status")
                with gr.Row(elem_id="share-row"):
                    share = gr.DeepLinkButton("Share this view", copied_value="Link copied", size="md", scale=0)
                    gr.Markdown(SHARE_HELP, elem_classes="footnote")
                open_view = gr.Textbox("segment", visible=False, elem_id="open-view")
                restore_token = gr.Textbox("", visible=False, elem_id="restore-token")

            with gr.Column(scale=6, min_width=420):
                with gr.Tabs(elem_id="views") as views:
                    with gr.Tab("Segment", id="segment", elem_id="tab-segment") as tab_segment:
                        overlay = gr.Image(
                            label="Overlay",
                            show_label=False,
                            format="png",
                            interactive=False,
                            buttons=["download", "fullscreen"],
                            height=400,
                            elem_id="overlay",
                        )
                        with gr.Row():
                            opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Opacity", elem_id="opacity")
                            threshold = gr.Slider(
                                0.0,
                                1.0,
                                value=host.default_prob_threshold,
                                step=0.01,
                                label="Background threshold",
                                info="Pixels whose best class probability is lower go to the background.",
                                elem_id="threshold",
                            )
                        hidden = gr.CheckboxGroup(choices=[], value=[], label="Hide classes", elem_id="hidden-classes")
                        with gr.Row(equal_height=False):
                            legend = gr.HTML(label="Legend and share of the image", elem_id="legend")
                            timings = gr.HTML(label="Timings", elem_id="timings")
                        with gr.Row(equal_height=False):
                            label_file = gr.File(
                                label="Label map (palette PNG, value = class index)", elem_id="label-file"
                            )
                            summary_file = gr.File(label="JSON summary", elem_id="summary-file")
                        with gr.Accordion("JSON summary", open=False):
                            summary_json = gr.JSON(label="Summary", elem_id="summary")
                    with gr.Tab("Anomalies", id="anomaly", elem_id="tab-anomaly") as tab_anomaly:
                        gr.Markdown(
                            "A few patch tokens of CLIP's penultimate layer are outliers that grab attention and "
                            "carry little local information. SC-CLIP finds them with LOF and replaces each by the "
                            "mean of its neighbours. Click the image to pick a patch."
                        )
                        anomaly_figure = gr.Image(
                            label="Anomaly tokens, LOF scores and token norms",
                            interactive=False,
                            format="png",
                            show_label=False,
                            elem_id="anomaly-figure",
                            elem_classes="figure-view",
                        )
                        patch_message = gr.Markdown("", elem_id="patch-message")
                        anomaly_names = gr.HTML("", elem_id="anomaly-patch-names")
                        with gr.Row(equal_height=False):
                            anomaly_click = gr.Image(
                                label="Pick a patch",
                                interactive=False,
                                format="png",
                                height=280,
                                elem_id="anomaly-click",
                                scale=1,
                            )
                            attention_figure = gr.Image(
                                label="Last-block attention of the picked patch",
                                interactive=False,
                                format="png",
                                show_label=False,
                                elem_id="attention-figure",
                                elem_classes="figure-view",
                                scale=2,
                            )
                    with gr.Tab("Similarity", id="similarity", elem_id="tab-similarity") as tab_similarity:
                        gr.Markdown(
                            "SC-CLIP reuses the mid layer's patch similarities, which are spatially coherent, to "
                            "calibrate the last layer. Green contours: the β threshold; pairs inside are aggregated."
                        )
                        similarity_message = gr.Markdown("", elem_id="similarity-message")
                        similarity_names = gr.HTML("", elem_id="similarity-patch-names")
                        similarity_click = gr.Image(
                            label="Pick a patch",
                            interactive=False,
                            format="png",
                            height=280,
                            elem_id="similarity-click",
                        )
                        similarity_figure = gr.Image(
                            label="Similarity of the picked patch",
                            interactive=False,
                            format="png",
                            show_label=False,
                            elem_id="similarity-figure",
                            elem_classes="figure-view",
                        )
                    with gr.Tab("Heatmaps", id="heatmaps", elem_id="tab-heatmaps") as tab_heatmaps:
                        gr.Markdown("One probability map per class, min-max normalised, jet colours over the image.")
                        heatmap_gallery = gr.Gallery(
                            label="Per-class probability", columns=3, height="auto", format="png", elem_id="heatmaps"
                        )
                    with gr.Tab("Ablation", id="ablation", elem_id="tab-ablation") as tab_ablation:
                        gr.Markdown(
                            "Runs full SC-CLIP, SC-CLIP with each stage removed in turn, vanilla CLIP and the chosen "
                            "comparison methods on the image and classes on the left, and compares each with full "
                            "SC-CLIP pixel by pixel."
                        )
                        comparisons = gr.CheckboxGroup(
                            choices=[(METHOD_LABELS[name], name) for name in COMPARISON_METHODS],
                            value=list(COMPARISON_METHODS),
                            label="Comparison methods",
                            elem_id="comparisons",
                        )
                        run_ablation = gr.Button("Run ablation", variant="primary", elem_id="run-ablation")
                        with gr.Row(equal_height=False):
                            with gr.Column(scale=1, min_width=300):
                                ablation_gallery = gr.Gallery(
                                    label="Side by side",
                                    columns=2,
                                    height="auto",
                                    format="png",
                                    preview=False,
                                    elem_id="ablation-gallery",
                                )
                            with gr.Column(scale=1, min_width=300, elem_id="compare-column"):
                                compare_left = gr.Dropdown(choices=[], label="Slider: left", elem_id="compare-left")
                                compare_right = gr.Dropdown(choices=[], label="Slider: right", elem_id="compare-right")
                                compare_slider = gr.ImageSlider(
                                    label="Before / after",
                                    show_label=False,
                                    interactive=False,
                                    format="png",
                                    max_height=640,
                                    elem_id="compare-slider",
                                )
                                compare_message = gr.Markdown(
                                    "Run the ablation, then choose two of its configurations to compare.",
                                    elem_id="compare-message",
                                )
                        ablation_table = gr.Dataframe(
                            label="Timings and agreement",
                            interactive=False,
                            wrap=True,
                            max_height=720,
                            elem_id="ablation-table",
                        )

        gr.Markdown(
            f"{limits_text(host, handlers.store)}\n\n"
            "API: `gradio_client.Client(url).predict(handle_file('photo.jpg'), 'cat; dog', api_name='/segment')` "
            "returns the label PNG and a JSON summary.",
            elem_classes="footnote",
            elem_id="limits",
        )

        with examples_anchor:
            examples = gr.Examples(
                examples=example_rows,
                inputs=[image, classes, background],
                outputs=[overlay, legend, timings, label_file, summary_json, summary_file, status],
                fn=handlers.example_preview,
                cache_examples=cache_examples,
                cache_mode="lazy" if cache_examples else None,
                examples_per_page=8,
                visible_columns=[0],
                label="Examples: click one (public-domain and CC0 photos; see assets/ATTRIBUTION.md)",
                elem_id="examples",
            )
        examples.load_input_event.then(lambda: None, outputs=point, api_visibility="private")
        method.change(
            lambda chosen: [gr.update(interactive=chosen == "sc-clip")] * 3,
            inputs=method,
            outputs=[stages, detector, beta],
            api_visibility="private",
            queue=False,
        )

        patch_outputs = [
            anomaly_click,
            anomaly_figure,
            attention_figure,
            similarity_click,
            similarity_figure,
            patch_message,
            similarity_message,
        ]
        result_views = [
            overlay,
            legend,
            timings,
            label_file,
            summary_file,
            summary_json,
            hidden,
            status,
            *patch_outputs,
            anomaly_names,
            similarity_names,
            heatmap_gallery,
        ]
        segment_inputs = [
            image,
            classes,
            background,
            threshold,
            method,
            stages,
            detector,
            beta,
            area_threshold,
            templates,
            refine_edges,
        ]
        heavy = {"preprocess": False, "concurrency_limit": HEAVY_CONCURRENCY, "concurrency_id": "model"}
        segmented = gr.on(
            [run.click, classes.submit],
            handlers.segment,
            inputs=segment_inputs,
            outputs=[label_file, summary_json],
            api_name="segment",
            api_description=segment_description(host, handlers.store),
            **heavy,
        )
        # A share link restores the inputs and views in the page; this session has no result yet, so the same run
        # starts once the load event has seen the link (see Handlers.open_shared_link).
        restored = restore_token.change(
            handlers.segment_shared,
            inputs=segment_inputs,
            outputs=[label_file, summary_json],
            api_visibility="private",
            **heavy,
        )
        demo.load(
            handlers.open_shared_link,
            inputs=[image, classes, open_view],
            outputs=[restore_token, views],
            api_visibility="private",
            show_progress="hidden",
            preprocess=False,
            queue=False,
        )
        for run_event, show, show_inputs in [
            (segmented, handlers.show_result, [opacity]),
            (restored, handlers.show_shared, [opacity, hidden]),
        ]:
            run_event.failure(
                handlers.clear_results,
                outputs=result_views,
                api_visibility="private",
                show_progress="hidden",
                queue=False,
            )
            run_event.success(
                show,
                inputs=show_inputs,
                outputs=[overlay, legend, timings, summary_file, hidden, status, point],
                api_visibility="private",
                show_progress="hidden",
            ).success(
                handlers.patch_views,
                inputs=point,
                outputs=patch_outputs,
                api_visibility="private",
                show_progress="hidden",
            ).success(
                handlers.patch_names,
                inputs=point,
                outputs=[anomaly_names, similarity_names],
                api_visibility="private",
                show_progress="hidden",
            ).success(handlers.heatmaps, outputs=heatmap_gallery, api_visibility="private", show_progress="hidden")
        share.click(
            handlers.forget_old_share_links,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )
        # The open tab is known to the server only when told: the share link then carries it.
        tabs = (tab_segment, tab_anomaly, tab_similarity, tab_heatmaps, tab_ablation)
        tab_ids = {tab.label: tab.id for tab in tabs}

        def opened(event: gr.SelectData) -> Any:
            return tab_ids.get(event.value, gr.skip()) if isinstance(event.value, str) else gr.skip()

        gr.on(
            [tab.select for tab in tabs],
            opened,
            outputs=open_view,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )

        cheap = {
            "api_visibility": "private",
            "trigger_mode": "always_last",
            "show_progress": "hidden",
            "concurrency_limit": CHEAP_CONCURRENCY,
        }
        gr.on(
            [opacity.input, hidden.input],
            handlers.rerender,
            inputs=[opacity, hidden],
            outputs=[overlay, legend, status],
            **cheap,
        )
        gr.on(
            [threshold.input, area_threshold.input],
            handlers.rethreshold,
            inputs=[threshold, area_threshold, opacity, hidden],
            outputs=[overlay, legend, label_file, summary_json, summary_file, status],
            api_name="rethreshold_view",
            **cheap,
        )
        rethreshold_api = gr.Button(visible=False, elem_id="rethreshold-api")
        rethreshold_api.click(
            handlers.rethreshold_api,
            inputs=[threshold, area_threshold],
            outputs=[label_file, summary_json],
            api_name="rethreshold",
            api_visibility=not_a_tool,
            api_description="Relabel this session's last /segment result under new thresholds, without the model.",
            concurrency_limit=CHEAP_CONCURRENCY,
        )
        gr.on(
            [overlay.select, anomaly_click.select, similarity_click.select],
            handlers.select_point,
            outputs=point,
            **cheap,
        ).success(
            handlers.patch_views,
            inputs=point,
            outputs=patch_outputs,
            **cheap,
        ).success(handlers.patch_names, inputs=point, outputs=[anomaly_names, similarity_names], **cheap)
        vocabulary.input(
            handlers.preset_classes, inputs=vocabulary, outputs=classes, api_visibility="private", queue=False
        )
        classes.input(lambda: "", outputs=vocabulary, api_visibility="private", queue=False, show_progress="hidden")
        demo.unload(handlers.forget)

        run_ablation.click(
            handlers.ablate,
            inputs=[image, classes, background, threshold, detector, beta, templates, comparisons, refine_edges],
            outputs=[ablation_gallery, ablation_table],
            api_name="ablation",
            api_description=(
                "Run full SC-CLIP, each stage removed, vanilla CLIP and comparison methods side by side, from one "
                "shared pass of the frozen blocks."
            ),
            api_visibility=not_a_tool,
            **heavy,
        ).success(
            handlers.comparison_choices,
            inputs=ablation_gallery,
            outputs=[compare_left, compare_right, compare_slider, compare_message],
            api_visibility="private",
            show_progress="hidden",
        )
        gr.on(
            [compare_left.input, compare_right.input],
            handlers.compare,
            inputs=[ablation_gallery, compare_left, compare_right],
            outputs=[compare_slider, compare_message],
            **cheap,
        )
        gr.api(handlers.model_info, api_name="model_info", queue=False)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CHEAP_CONCURRENCY)
    return demo
