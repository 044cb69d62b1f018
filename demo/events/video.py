"""Video events: a clip segmented frame by frame with the left column's classes and settings (the public
`/segment_video`), then its legend and share-over-time plot drawn from the run's summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from demo.events.common import admitted, progress_reporter, user_error
from demo.events.segmenting import DEFAULT_BACKGROUND, SegmentEvents, documented
from demo.host import run_frame
from demo.inputs import DEFAULT_BETA, DEFAULT_DETECTOR, DEFAULT_METHOD, DEFAULT_TEMPLATES, image_path, parse_vocabulary
from demo.labels import METHOD_REFINEMENTS, describe_run
from demo.memory import release_freed_memory
from demo.outputs import output_dir
from demo.video import ClipOutputs, check_clip, frame_count, mean_shares, sampling, shares_figure
from demo.views import UNTRAINED_NOTE, palette_colours, shares_legend_html
from scclip_core import render
from scclip_core.images import cap_size
from scclip_core.video import read_frames

RUN_FIELDS = ("model", "weights", "method", "stages", "pamr_steps", "refine", "prob_threshold", "area_threshold")


class VideoOutputs(NamedTuple):
    """What `/segment_video` returns: the overlay video, the zip of label maps, shares and COCO file, the summary."""

    video_output: str
    video_zip: str
    video_summary: dict[str, Any]


class VideoViews(NamedTuple):
    """The legend (mean share over the clip) and the plot of each class's share over time."""

    video_legend: str
    video_shares: Image.Image | None


class VideoEvents:
    """A clip runs like a segmentation (same validation, admission and turns at the model), one frame at a time."""

    def __init__(self, segmenting: SegmentEvents) -> None:
        self.segmenting = segmenting

    @user_error
    @documented
    def segment_video(
        self,
        video: Any,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        method: str = DEFAULT_METHOD,
        stage_names: Sequence[str] | str | None = None,
        detector: str = DEFAULT_DETECTOR,
        beta: float = DEFAULT_BETA,
        area_threshold: float = 0.0,
        templates: str = DEFAULT_TEMPLATES,
        refine: str = METHOD_REFINEMENTS,
        refine_edges: bool = False,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> VideoOutputs:
        """Segment a video clip frame by frame with a class list; frames beyond the limit are sampled evenly.

        Args:
            video: the clip: mp4, mov, webm, avi or gif, within the length limit (the API description states it).
            classes_text: the classes, `;` or a new line between classes, `,` between synonyms: "cat; dog, puppy".
            background_words: comma-separated words of one added "background" class (default: sky, wall...); "": none.
            prob_threshold: 0 to 1; pixels whose best probability is lower go to the background (default 0.15).
            method: {methods}.
            stage_names: SC-CLIP stages to keep on, a list or one comma-separated string; default all five.
            detector: anomaly detector of SC-CLIP: lof (default) or l2norm.
            beta: SC-CLIP's affinity threshold, 0 to 1 (default 0.4).
            area_threshold: 0 to 1; classes covering at most this share of the foreground are dropped (default 0).
            templates: prompt templates: openai (80, as in the paper) or simple (7, faster for long class lists).
            refine: refinement of the logits: {refine_choices} (default {refine_default}): {refine_help}
            refine_edges: the older switch: true is refine="pamr".

        Returns the overlay video (H.264 MP4 at the sampled frame rate), a zip (frame_000000.png... label maps at
        the frame size, value = index into summary["classes"]; shares.json, each frame's class shares; the COCO
        file of every frame) and a JSON summary (classes, legend with mean shares, per-frame shares, what ran).
        """
        host = self.segmenting.host
        started = time.perf_counter()
        try:
            settings = self.segmenting.settings(
                method,
                stage_names,
                detector,
                beta,
                background_words,
                prob_threshold,
                area_threshold,
                templates,
                refine_edges,
                refine,
            )
            path = image_path(video)
            info = check_clip(path, host.limits)
            assert path is not None  # check_clip refuses a missing clip
            vocabulary = parse_vocabulary(classes_text, settings, host.limits)
            host.segmenter(settings.templates)
            every, count = sampling(frame_count(info), host.limits.max_video_frames)
            report = progress_reporter(progress)
            with admitted(self.segmenting.admission, request):
                segmenter, notice = host.text_segmenter(vocabulary, settings.templates)
                last = None
                with ClipOutputs(
                    output_dir(),
                    vocabulary.names,
                    vocabulary.background_index,
                    info.frame_rate / every,
                    untrained=host.is_random,
                ) as outputs:
                    for number, frame in enumerate(read_frames(path, every=every, max_frames=count)):
                        if report:
                            report(number / count, f"frame {number + 1}/{count}")
                        rgb, _ = cap_size(frame.rgb, host.config.max_input_side)
                        last, _ = run_frame(host, rgb, vocabulary, settings, segmenter)
                        outputs.add(frame, last)
                    files = outputs.finish()
        finally:
            release_freed_memory()
        assert last is not None  # finish() refuses a clip without frames
        notices = [*last.notices, *([notice] if notice else [])]
        if (last.image.shape[1], last.image.shape[0]) != info.size:
            notices.append(
                f"processed at {last.image.shape[1]}x{last.image.shape[0]} (this demo's size cap of "
                f"{host.config.max_input_side} px); the label maps are at the video's size "
                f"{info.size[0]}x{info.size[1]}"
            )
        if every > 1:
            notices.append(
                f"1 frame in {every} segmented ({len(files.frames)} frames): at most {host.limits.max_video_frames} "
                "per clip, sampled evenly"
            )
        shares = mean_shares(vocabulary.names, files.frames)
        colours = palette_colours(len(vocabulary.names), vocabulary.background_index)
        ran = last.to_json()
        summary: dict[str, Any] = {
            "classes": vocabulary.names,
            "background_index": vocabulary.background_index,
            "legend": [
                {"index": index, "name": name, "colour": colours[index], "mean_share": shares[name]}
                for index, name in enumerate(vocabulary.names)
            ],
            "frames": files.frames,
            "every": every,
            "frames_segmented": len(files.frames),
            "frame_rate": float(info.frame_rate / every),
            "video_size": list(info.size),
            "description": describe_run(last),
            "templates": segmenter.config.templates,
            **{name: ran[name] for name in RUN_FIELDS},
            "notices": notices,
            "seconds": round(time.perf_counter() - started, 3),
            "untrained_weights": host.is_random,
        }
        if host.is_random:
            summary["warning"] = UNTRAINED_NOTE
        return VideoOutputs(str(files.video), str(files.zip), summary)

    def show(self, summary: dict[str, Any] | None) -> VideoViews:
        """The legend and the share-over-time plot of a run, from its summary (no model, nothing kept)."""
        if not summary or not summary.get("frames"):
            return VideoViews("", None)
        names, background = summary["classes"], summary["background_index"]
        untrained = bool(summary.get("untrained_weights"))
        legend = shares_legend_html(
            names, {entry["name"]: entry["mean_share"] for entry in summary["legend"]}, background, untrained=untrained
        )
        figure = shares_figure(names, background, summary["frames"], note=UNTRAINED_NOTE if untrained else None)
        return VideoViews(legend, render.figure_image(figure))
