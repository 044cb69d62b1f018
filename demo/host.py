"""The process's one model, and the only code that runs it.

Every piece of model work (a batch of windows, a chunk of class names, one prediction) takes a turn at the
model in arrival order (`ModelTurns`), so a request with a long class list is interleaved with the others
instead of holding the model until it is done. On ZeroGPU hardware `run_segment`, `run_ablation` and
`run_frame` (one frame of a clip or a webcam stream per call) alone hold the GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from demo.ablation import AblationRun
from demo.inputs import LIMITS, TRAINED_PROB_THRESHOLD, RequestLimits, RequestSettings
from demo.labels import variant_label
from demo.memory import release_freed_memory
from demo.timings import ModelTimes
from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    TEMPLATE_SET_NAMES,
    ImageEmbedding,
    LoadedModel,
    PatchNamer,
    PointNames,
    ScclipError,
    Segmentation,
    Segmenter,
    SegmenterConfig,
    TextEmbeddingCache,
    Variant,
    Vocabulary,
    load_model,
    preset_queries,
    resolve_weights,
)
from scclip_core.backbones import RANDOM_WEIGHTS
from scclip_core.config import TemplateSet
from scclip_core.images import cap_size

LOGGER = logging.getLogger(__name__)
DEMO_CONFIG = SegmenterConfig(max_input_side=1024)
TURN_PROMPTS = 480  # prompts embedded per turn: 6 names x 80 templates, about 0.9 s on 2 vCPUs (benchmarks.text)
PREVIEW_SIDE = 480
SHORT_TEMPLATES: TemplateSet = "simple"
FRAME_GPU_SECONDS = 20
Progress = Callable[[float, str], None]
ON_ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
_WARM_UPS: dict[threading.Event, threading.Thread] = {}  # the running warm-ups, by the event that stops each


@atexit.register
def stop_warm_ups() -> None:
    """Stop the warm-ups still running, each after its current turn, and wait for them: a daemon thread killed
    inside torch when the interpreter exits aborts the process."""
    for stop in list(_WARM_UPS):
        stop.set()
    for thread in list(_WARM_UPS.values()):
        thread.join(60)


def _gpu(duration: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`spaces.GPU(duration=...)` where the `spaces` package exists (Hugging Face Spaces; it only acts on ZeroGPU
    hardware), a no-op decorator elsewhere."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=duration)


class ModelTurns:
    """A first-come, first-served lock: each `turn()` waits for every turn asked for before it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._condition:
                self._serving += 1
                self._condition.notify_all()


class ModelHost:
    """The process's one model and segmenters, or the reason the weights could not be loaded.

    Loading never raises: the app must start either way and show `banner_html()`; `segmenter()` raises the reason
    as a ScclipError when someone tries to run.
    """

    def __init__(
        self,
        model_name: str,
        weights: str | None,
        *,
        config: SegmenterConfig | None = None,
        limits: RequestLimits = LIMITS,
    ) -> None:
        self.model_name = model_name
        self.weights = weights
        self.config = config or DEMO_CONFIG
        self.limits = limits
        self.turns = ModelTurns()
        self.model: LoadedModel | None = None
        self._segmenters: dict[str, Segmenter] = {}
        self._live_segmenters: dict[str, Segmenter] = {}
        self.namer: PatchNamer | None = None
        self.load_error: str | None = None
        self._warm_lock = threading.Lock()
        self._warm_thread: threading.Thread | None = None
        try:
            self.weights = resolve_weights(model_name, weights)
            self.model = load_model(model_name, weights=self.weights)
            text_cache = TextEmbeddingCache.default()
            self._segmenters = {
                templates: Segmenter(self.model, replace(self.config, templates=templates), text_cache=text_cache)
                for templates in TEMPLATE_SET_NAMES
            }
            for segmenter in self._segmenters.values():
                segmenter.text.embed(DEFAULT_BACKGROUND_WORDS)
            self.namer = PatchNamer(self._segmenters[SHORT_TEMPLATES].text)
        except ScclipError as error:
            self.load_error = str(error)
        except Exception as error:
            LOGGER.exception("loading the model failed")
            self.load_error = f"{type(error).__name__}: {error}"

    @property
    def is_random(self) -> bool:
        return self.model is not None and self.model.is_random

    @property
    def default_prob_threshold(self) -> float:
        """The paper's background threshold; 0 with untrained weights, whose flat probabilities would all fall
        below it and leave nothing but background to see."""
        return 0.0 if self.is_random else TRAINED_PROB_THRESHOLD

    def segmenter(self, templates: TemplateSet) -> Segmenter:
        """The shared segmenter for a template set, or the load failure as an error. Shared by every visitor, so
        it is only used through `embed_image` and explicit embeddings: it never remembers an image."""
        if not self._segmenters:
            raise ScclipError(
                f"The model is not available, so nothing can run. Reason: {self.load_error} "
                "Fix: set SCCLIP_WEIGHTS (or --weights) to a pretrained tag that is cached or downloadable, "
                "a local weight file, or 'random' for a smoke test, then restart the app."
            )
        return self._segmenters[templates]

    def text_segmenter(self, vocabulary: Vocabulary, templates: TemplateSet) -> tuple[Segmenter, str | None]:
        """The segmenter whose templates this request can afford, and a notice when the short set stands in."""
        segmenter = self.segmenter(templates)
        new_names = len(segmenter.text.uncached(vocabulary.queries))
        if templates == SHORT_TEMPLATES or new_names <= self.limits.full_template_names:
            return segmenter, None
        short = self.segmenter(SHORT_TEMPLATES)
        return short, (
            f"{new_names} class names needed new text embeddings, more than {self.limits.full_template_names} at "
            "once: this run used the 7 short prompt templates instead of the 80 of the paper, to keep the queue "
            "moving for everyone"
        )

    def live_segmenter(self, segmenter: Segmenter) -> Segmenter:
        """`segmenter` for webcam frames: a frame keeps its reduced size instead of being upscaled to the short side
        (so a 224 px frame is one window), and shares `segmenter`'s text encoder, so names are embedded once and the
        template prefixes are kept once."""
        templates = segmenter.config.templates
        if templates not in self._live_segmenters:
            config = replace(segmenter.config, short_side=None)
            self._live_segmenters[templates] = Segmenter(segmenter.model, config, text=segmenter.text)
        return self._live_segmenters[templates]

    def embed_text(self, segmenter: Segmenter, names: Sequence[str], stop: threading.Event | None = None) -> None:
        """Embed the names not cached yet, a few prompts per turn at the model; before each turn, give up if `stop`
        is set."""
        missing = segmenter.text.uncached(names)
        step = max(1, TURN_PROMPTS // len(segmenter.text.templates))
        for start in range(0, len(missing), step):
            if stop is not None and stop.is_set():
                return
            with self.turns.turn():
                segmenter.text.embed(missing[start : start + step])

    def warm_up(self) -> threading.Thread | None:
        """Embed, in the background and in turns, the patch namer's vocabulary and the presets' names with the short
        templates, then the presets' names with every other template set, so that naming a patch or picking a
        preset costs no text encoding later (the on-disk text cache keeps them across restarts). Starts once;
        returns the thread, or None without a model."""
        if self.namer is None:
            return None
        with self._warm_lock:
            if self._warm_thread is None:
                plan = {SHORT_TEMPLATES: list(dict.fromkeys([*preset_queries(), *self.namer.names]))}
                plan.update((other, list(preset_queries())) for other in TEMPLATE_SET_NAMES if other != SHORT_TEMPLATES)

                stop = threading.Event()

                def embed() -> None:
                    try:
                        for templates, names in plan.items():
                            self._embed_logged(self._segmenters[templates], names, stop)
                    except Exception:
                        LOGGER.exception("embedding the preset vocabularies failed")
                    finally:
                        _WARM_UPS.pop(stop, None)
                        release_freed_memory()

                self._warm_thread = threading.Thread(target=embed, name="scclip-warm-up", daemon=True)
                _WARM_UPS[stop] = self._warm_thread
                self._warm_thread.start()
            return self._warm_thread

    def _embed_logged(self, segmenter: Segmenter, names: Sequence[str], stop: threading.Event) -> None:
        """`embed_text`, and one log line on what it took (benchmarks.visitors reads it) unless stopped."""
        started = time.perf_counter()
        new = len(segmenter.text.uncached(names))
        self.embed_text(segmenter, names, stop)
        if stop.is_set():
            return
        seconds = time.perf_counter() - started
        message = "warm-up: %d of %d names embedded with the %s templates in %.1f s"
        LOGGER.info(message, new, len(names), segmenter.config.templates, seconds)

    def name_patch(
        self, embedding: ImageEmbedding, point: tuple[int, int], extra_names: Sequence[str]
    ) -> PointNames | None:
        """The top 10 names of the patch under `point`, calibrated and in vanilla CLIP; None while the namer's
        vocabulary is still being embedded (`warm_up`, started here if it was not), so a click never waits."""
        simple = self.segmenter(SHORT_TEMPLATES)
        assert self.namer is not None  # made with the segmenters
        if simple.text.uncached(self.namer.names):
            self.warm_up()
            return None
        self.embed_text(simple, extra_names)
        with self.turns.turn():
            return self.namer.name_point(embedding, *point, k=10, extra_names=extra_names)

    def banner_html(self) -> str:
        """A coloured banner: the load failure with its fix, the untrained-weights warning, or the model info."""
        style = "padding:10px 14px;border-radius:8px;font-size:0.95em;"
        if self.load_error is not None:
            return (
                f'<div id="banner-error" role="alert" style="{style}background:#fee2e2;border:1px solid #b91c1c;'
                f'color:#7f1d1d"><b>The model could not be loaded</b> ({html.escape(self.model_name)}, weights '
                f"<code>{html.escape(self.weights or 'default')}</code>). {html.escape(self.load_error)}<br>"
                "<b>Or:</b> set <code>SCCLIP_WEIGHTS</code> (or <code>python app.py --weights ...</code>) to a local "
                "weight file, or <code>random</code> for a smoke test, and restart. Nothing can be segmented until "
                "then.</div>"
            )
        assert self.model is not None
        if self.model.is_random:
            tag = html.escape(resolve_weights(self.model.name))
            fix = (
                f"<code>SCCLIP_WEIGHTS={tag}</code> (or <code>--weights {tag}</code>)"
                if tag != RANDOM_WEIGHTS
                else "<code>SCCLIP_WEIGHTS</code> (or <code>--weights</code>) to a pretrained tag or a weight file"
            )
            return (
                f'<div id="banner-untrained" role="alert" style="{style}background:#fef3c7;border:1px solid #b45309;'
                f'color:#78350f"><b>Untrained weights.</b> {html.escape(self.model.name)} runs with random, untrained '
                f"weights: the pipeline works, but every result is meaningless and is marked as such. Set {fix} for "
                "real results.</div>"
            )
        return (
            f'<div id="banner-info" style="{style}background:#ecfdf5;border:1px solid #047857;color:#064e3b">'
            f"Model <b>{html.escape(self.model.name)}</b>, weights {html.escape(self.model.weights)}, "
            f"on {html.escape(str(self.model.device))}. Training-free: no part of CLIP was fine-tuned.</div>"
        )


@_gpu(duration=120)
def run_segment(
    host: ModelHost,
    image: np.ndarray,
    previous: ImageEmbedding | None,
    vocabulary: Vocabulary,
    settings: RequestSettings,
    *,
    trace: bool,
    progress: Progress | None,
) -> tuple[ImageEmbedding, Segmentation, ModelTimes]:
    """The image side (`previous` itself when its key is this request's, without a turn at the model), the text
    side in turns, then the prediction; with the seconds each took, turns at the model included (returned, not
    recorded: on ZeroGPU this runs in another process)."""
    started = time.perf_counter()
    segmenter, notice = host.text_segmenter(vocabulary, settings.templates)
    key = segmenter.image_key(image, **settings.image_side)
    image_seconds: float | None = None
    if previous is not None and previous.serves(key, trace):
        embedding = previous
    else:
        with host.turns.turn():
            embedding = segmenter.embed_image(image, **settings.image_side, trace=trace, progress=progress)
        image_seconds = time.perf_counter() - started
    text_started = time.perf_counter()
    host.embed_text(segmenter, vocabulary.queries)
    predict_started = time.perf_counter()
    with host.turns.turn():
        segmentation = segmenter.predict(vocabulary, embedding=embedding, **settings.prediction)
    ended = time.perf_counter()
    if notice:
        segmentation.notices.append(notice)
    text_in_predict = segmentation.timings["text"]  # any text `embed_text` left to do: this request's too
    times = ModelTimes(
        text=predict_started - text_started + text_in_predict,
        image=image_seconds,
        prediction=ended - predict_started - text_in_predict,
    )
    return embedding, segmentation, times


@_gpu(duration=180)
def run_ablation(
    host: ModelHost,
    image: np.ndarray,
    vocabulary: Vocabulary,
    settings: RequestSettings,
    configurations: Sequence[Variant],
    *,
    preview_side: int = PREVIEW_SIDE,
    progress: Progress | None,
) -> tuple[float, list[AblationRun]]:
    """Every configuration from one shared pass of the frozen blocks: returns the shared seconds (preprocessing
    and blocks 1..L-1, paid once) and each configuration's run with the seconds that were its own (its last
    block, its prediction).

    The image side is exactly `/segment`'s; the labels are predicted at preview size (long side at most
    `preview_side`), which is all the side-by-side gallery and the pixel agreement need.
    """
    segmenter, notice = host.text_segmenter(vocabulary, settings.templates)
    with host.turns.turn():
        embeddings = segmenter.set_image_variants(
            image, list(configurations), params=settings.params, progress=progress
        )
    preview, _ = cap_size(image, preview_side)
    embeddings = [replace(embedding, image=preview) for embedding in embeddings]
    shared = sum(embeddings[0].timings[name] for name in embeddings[0].shared_timings)
    host.embed_text(segmenter, vocabulary.queries)
    runs = []
    for index, (variant, embedding) in enumerate(zip(configurations, embeddings)):
        if progress:
            progress(index / len(configurations), f"{variant_label(variant)} ({index + 1}/{len(configurations)})")
        with host.turns.turn():
            started = time.perf_counter()
            segmentation = segmenter.predict(vocabulary, embedding=embedding, **settings.prediction)
            own = embedding.timings["last_block"] + time.perf_counter() - started
        if notice:
            segmentation.notices.append(notice)
        runs.append(AblationRun(variant, segmentation, own))
    return shared, runs


@_gpu(duration=FRAME_GPU_SECONDS)
def run_frame(
    host: ModelHost, image: np.ndarray, vocabulary: Vocabulary, settings: RequestSettings, segmenter: Segmenter
) -> tuple[Segmentation, ModelTimes]:
    """One frame of a clip or of a webcam stream, a GPU call of its own, so that a clip or a stream never holds the
    GPU between frames: the text side (embedded once, so later frames find it cached and take no turn for it), the
    image side in one turn at the model and the prediction in another, so that frames interleave with other
    requests; with the seconds each took. `segmenter` is the one `text_segmenter` chose for the whole clip or
    stream (`live_segmenter`'s copy of it for webcam frames)."""
    started = time.perf_counter()
    host.embed_text(segmenter, vocabulary.queries)
    image_started = time.perf_counter()
    with host.turns.turn():
        embedding = segmenter.embed_image(image, **settings.image_side)
    predict_started = time.perf_counter()
    with host.turns.turn():
        segmentation = segmenter.predict(vocabulary, embedding=embedding, **settings.prediction)
    ended = time.perf_counter()
    times = ModelTimes(
        text=image_started - started, image=predict_started - image_started, prediction=ended - predict_started
    )
    return segmentation, times
