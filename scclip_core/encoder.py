"""Dense patch embeddings from a CLIP vision transformer: SC-CLIP and the methods it is compared with.

`encode_dense_variants` runs the frozen stem and blocks 1..L-1 once, keeping only the block outputs the variants
need, then replaces the last block once per variant with its method's own (`scclip_core.methods`: SC-CLIP's
calibrated attention-only block, each stage under a flag, or a comparison method's), built from `SharedPass`.
What several variants derive from the frozen pass (anomaly scores, affinities, calibrated tokens, projections,
attentions) is computed once. `encode_dense` is the one-variant case. Crops are processed as one batch; anomaly
detection is per crop. SC-CLIP's two passes of the last block share one batched attention.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import calibration as cal
from .config import (
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    CalibrationParams,
    LayerConfig,
    Method,
    Stages,
    Variant,
    resolve_layers,
)
from .errors import InputError
from .methods import METHOD_SPECS, LastBlockOutput


class _Block(Protocol):
    """The parts of an open_clip residual attention block that the last-block variants read."""

    attn: nn.MultiheadAttention
    ln_1: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    ls_1: nn.Module
    ls_2: nn.Module

    def __call__(self, x: Tensor) -> Tensor: ...


class _Transformer(Protocol):
    resblocks: Sequence[_Block]


@runtime_checkable
class _VisionTower(Protocol):
    """The parts of an open_clip VisionTransformer that the encoder reads."""

    conv1: nn.Conv2d
    class_embedding: Tensor
    positional_embedding: Tensor
    ln_pre: nn.Module
    transformer: _Transformer
    ln_post: nn.Module
    proj: Tensor


@dataclass
class CropTrace:
    """What one crop looked like inside the encoder, for visualisation (CPU float32 tensors).

    `vanilla_embeddings` (N, E) are CLIP's own last-block patch embeddings (normalised), so that what a patch
    matches before calibration can be shown beside what it matches after.
    """

    grid: tuple[int, int]
    anomaly_indices: Tensor
    lof_scores: Tensor
    anomalies_resolved: bool
    mid_similarity: Tensor
    shallow_similarity: Tensor
    last_similarity: Tensor
    calibrated_similarity: Tensor
    attention_uncalibrated: Tensor
    attention_calibrated: Tensor
    token_norms: Tensor
    vanilla_embeddings: Tensor
    beta: float
    window: tuple[int, int, int, int] | None = None


@dataclass
class DenseOutput:
    """`patch_embeddings` is (B, H/p, W/p, E): after `ln_post` and `proj`, not normalised.

    `seconds` is this variant's own cost: its last block and projection, without the shared frozen pass.
    """

    patch_embeddings: Tensor
    trace: list[CropTrace] | None = None
    seconds: float = 0.0
    state: object = None
    """For a method whose image side depends on the class text, what its `text_pass` continues from."""


@dataclass
class DenseVariants:
    """Several variants encoded from one frozen pass, in the order asked.

    `shared_seconds` was spent once for all of them: the stem, blocks 1..L-1 and whatever more than one variant
    used; each output's `seconds` is the rest, so the two add up to the whole call.
    """

    outputs: list[DenseOutput]
    shared_seconds: float


@dataclass
class _BlockFeatures:
    """The block outputs (B, 1+N, D) that the last-block variants read; the rest are never kept."""

    penultimate: Tensor
    mid: Tensor
    shallow: Tensor
    multi_level_sum: Tensor | None
    token_norms: Tensor | None
    attention_means: dict[tuple[int, ...], Tensor]

    def multi_level(self) -> Tensor:
        """The multi-level sum, which `_run_frozen_blocks` keeps whenever a variant runs the multi-level pass."""
        assert self.multi_level_sum is not None, "the multi-level sum was not kept"
        return self.multi_level_sum

    def norms(self) -> Tensor:
        """The patch-token norms after every frozen block, which `_run_frozen_blocks` keeps when tracing."""
        assert self.token_norms is not None, "the token norms are kept only when tracing"
        return self.token_norms

    def attention_mean(self, blocks: tuple[int, ...]) -> Tensor:
        """The mean softmax attention (B, heads, 1+N, 1+N) float32 of frozen `blocks`, kept when a variant asked."""
        assert blocks in self.attention_means, f"the attention of blocks {blocks} was not kept"
        return self.attention_means[blocks]


def _stem(visual: _VisionTower, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Patch embedding, CLS token and (bicubically interpolated) positional embedding, then `ln_pre`."""
    dtype = visual.conv1.weight.dtype
    patches = visual.conv1(images.to(dtype))
    grid = (patches.shape[2], patches.shape[3])
    tokens = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(dtype).expand(tokens.shape[0], 1, -1)
    tokens = torch.cat([cls, tokens], dim=1)
    return visual.ln_pre(tokens + _positional_embedding(visual, grid).to(dtype)), grid


def _positional_embedding(visual: _VisionTower, grid: tuple[int, int]) -> Tensor:
    """The positional embedding for `grid`, resized as the official SC-CLIP, SCLIP, ClearCLIP and NACLIP code does.

    That is DINO's resize: bicubic with `scale_factor=((h + 0.1) / g, (w + 0.1) / g)` from the native g×g grid.
    PyTorch maps coordinates by the given factor rather than by the size ratio, so this differs from resizing
    to `size=grid` (by up to 5e-2 in the output at 448 crops). The native grid is left unchanged.
    """
    embedding = visual.positional_embedding
    native_side = round((embedding.shape[0] - 1) ** 0.5)
    if grid == (native_side, native_side):
        return embedding
    patch_part = embedding[1:].float().T.reshape(1, -1, native_side, native_side)
    scale = ((grid[0] + 0.1) / native_side, (grid[1] + 0.1) / native_side)
    resized = F.interpolate(patch_part, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(resized.shape[2:]) != grid:
        raise InputError(f"positional embedding resized to {tuple(resized.shape[2:])} instead of {grid}")
    return torch.cat([embedding[:1].float(), resized.reshape(embedding.shape[1], -1).T]).to(embedding.dtype)


def _check_supported(visual: nn.Module) -> _VisionTower:
    """`visual` as the tower the encoder reads, or an InputError naming what it lacks."""
    if (
        not isinstance(visual, _VisionTower)
        or getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "final_ln_after_pool", False)
    ):
        missing = [name for name in _VisionTower.__annotations__ if not hasattr(visual, name)]
        raise InputError(
            "encode_dense needs an open_clip VisionTransformer with a CLS token and no attention pooling "
            f"(missing: {missing or 'none'}); timm and CoCa towers are not supported"
        )
    return visual


def _block_with_attention(block: _Block, x: Tensor) -> tuple[Tensor, Tensor]:
    """A standard residual block (batch first) with its softmax attention computed explicitly: its output and the
    attention map (B, heads, T, T)."""
    normed = block.ln_1(x)
    query, key, value = (_in_projection(block, normed, part) for part in "qkv")
    weights = _softmax_attention(query, key)
    return residual_block(block, x, weights @ value), weights


def _run_frozen_blocks(
    visual: _VisionTower,
    tokens: Tensor,
    layers: LayerConfig,
    keep_multi_level: bool,
    trace: bool,
    attention_blocks: Sequence[tuple[int, ...]] = (),
) -> _BlockFeatures:
    """Blocks 1..L-1, keeping what the variants read; `attention_blocks` are the sets of blocks (0-based) whose mean
    softmax attention some variant reads (those blocks run with their attention computed explicitly)."""
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    kept: dict[int, Tensor] = {}
    multi_level_sum: Tensor | None = None
    attention_sums: dict[tuple[int, ...], Tensor] = {}
    explicit = {index for wanted in attention_blocks for index in wanted}
    norms = []
    x = tokens if batch_first else tokens.transpose(0, 1)
    for index, block in enumerate(blocks[:-1]):
        if index in explicit:
            x, weights = _block_with_attention(block, x if batch_first else x.transpose(0, 1))
            x = x if batch_first else x.transpose(0, 1)
            for wanted in attention_blocks:
                if index in wanted:
                    part = weights.float() / len(wanted)
                    attention_sums[wanted] = attention_sums[wanted] + part if wanted in attention_sums else part
        else:
            x = block(x)
        out = x if batch_first else x.transpose(0, 1)
        if index in (layers.pre_adjust_idx, layers.post_adjust_idx):
            kept[index] = out
        if keep_multi_level and layers.multi_start_idx <= index < layers.multi_end_idx:
            if multi_level_sum is None:
                multi_level_sum = out.to(torch.float32, copy=True)
            else:
                multi_level_sum += out
        if trace:
            norms.append(out[:, 1:].float().norm(dim=2))
    penultimate = x if batch_first else x.transpose(0, 1)
    return _BlockFeatures(
        penultimate=penultimate,
        mid=kept[layers.pre_adjust_idx],
        shallow=kept[layers.post_adjust_idx],
        multi_level_sum=multi_level_sum,
        token_norms=torch.stack(norms, dim=1) if trace else None,
        attention_means=attention_sums,
    )


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, num_heads, width // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _in_projection(block: _Block, normed: Tensor, part: str) -> Tensor:
    """The last block's q, k or v (`part`) of `ln_1`-normalised tokens, split into heads: (B, heads, T, d)."""
    attn = block.attn
    width = normed.shape[-1]
    start = "qkv".index(part) * width
    rows = slice(start, start + width)
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[rows]
    return _split_heads(F.linear(normed, attn.in_proj_weight[rows], bias), attn.num_heads)


def _softmax_attention(query: Tensor, key: Tensor, bias: Tensor | None = None) -> Tensor:
    logits = (query @ key.transpose(-2, -1)) * query.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    return logits.softmax(dim=-1)


def attend(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, want_map: bool
) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v, fused unless the attention map itself is wanted; the bias is cast to the
    query's dtype either way, so a float32 bias works in a half-precision model."""
    mask = None if bias is None else bias.to(query.dtype)
    if want_map:
        weights = _softmax_attention(query, key, mask)
        return weights @ value, weights
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask), None


def out_proj(block: _Block, heads: Tensor) -> Tensor:
    """The block's output projection of attended heads (B, heads, T, d): (B, T, D)."""
    return block.attn.out_proj(_merge_heads(heads))


def residual_block(block: _Block, x: Tensor, heads: Tensor) -> Tensor:
    """The rest of a standard block after attention: residual, then MLP with its residual."""
    x = x + block.ls_1(out_proj(block, heads))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def patches_only(tokens: Tensor, weights: Tensor | None) -> LastBlockOutput:
    """Drop the CLS token from a block's output (B, 1+N, D) and its attention map (B, heads, 1+N, 1+N)."""
    return LastBlockOutput(tokens[:, 1:], None if weights is None else weights.float().mean(dim=1)[:, 1:, 1:])


def project(visual: _VisionTower, tokens: Tensor) -> Tensor:
    """`ln_post` then `proj`: the tower's output embeddings of tokens (..., D) -> (..., E)."""
    return visual.ln_post(tokens) @ visual.proj


def _detect_anomalies(patches: Tensor, params: CalibrationParams) -> tuple[Tensor, Tensor]:
    """Per-crop anomaly scores (LOF, or the L2 norm for the norm detector) and the bool outlier mask."""
    if params.detector == "lof":
        scores = cal.lof_scores(patches, params.lof_k)
        return scores, cal.outliers_by_quantile(scores, params.contamination)
    return patches.norm(dim=2), cal.outliers_by_norm(patches, params.contamination)


_Value = TypeVar("_Value")
_Key = TypeVar("_Key", bound=Hashable)


class Source(NamedTuple):
    """Where the last block's input tokens come from: all tokens of block L-1 (the comparison methods), SC-CLIP's
    calibrated penultimate patches (anomalies resolved or not, pre-aggregated or not), or the patch rows of the
    multi-level sum (SC-CLIP's second pass)."""

    kind: str
    resolved: bool = False
    pre_aggregated: bool = False


PENULTIMATE = Source("penultimate")
MULTI_LEVEL = Source("multi_level")


def calibrated_source(resolved: bool, pre_aggregated: bool) -> Source:
    """SC-CLIP's calibrated penultimate patches, anomalies resolved or not, pre-aggregated or not."""
    return Source("calibrated", resolved, pre_aggregated)


class _SharedValues:
    """Values several variants derive from one frozen pass, each computed at most once, with honest accounting.

    For every value it records the seconds spent computing it (without the values it asked for in turn) and which
    variants used it, directly or through another value. Time spent on a value that more than one variant used
    belongs to the shared pass; the rest belongs to the variant that spent it.
    """

    def __init__(self) -> None:
        self.variant = 0
        self._values: dict[Hashable, object] = {}
        self._parts: dict[Hashable, set[Hashable]] = {}
        self._users: dict[Hashable, set[int]] = {}
        self._seconds: dict[Hashable, float] = {}
        self._computed_by: dict[Hashable, int] = {}
        self._open: list[tuple[Hashable, list[float]]] = []

    def get(self, key: Hashable, compute: Callable[[], _Value]) -> _Value:
        if self._open:
            self._parts[self._open[-1][0]].add(key)
        if key not in self._values:
            self._parts[key], self._users[key] = set(), set()
            nested = [0.0]
            self._open.append((key, nested))
            start = time.perf_counter()
            self._values[key] = compute()
            elapsed = time.perf_counter() - start
            self._open.pop()
            self._seconds[key] = elapsed - nested[0]
            self._computed_by[key] = self.variant
            if self._open:
                self._open[-1][1][0] += elapsed
        self._mark_used(key)
        return cast(_Value, self._values[key])

    def get_many(self, keys: Sequence[_Key], compute: Callable[[list[_Key]], Sequence[_Value]]) -> list[_Value]:
        """The values of `keys`; those not computed yet come from one call `compute(missing keys)`, in that order.

        Each key keeps its own value, so a later call that shares some keys computes only the others.
        """
        missing = [key for key in keys if key not in self._values]
        together = ("together", *missing)

        def one(key: _Key) -> Callable[[], _Value]:
            return lambda: self.get(together, lambda: compute(missing))[missing.index(key)]

        return [self.get(key, one(key)) for key in keys]

    def _mark_used(self, key: Hashable) -> None:
        if self.variant not in self._users[key]:
            self._users[key].add(self.variant)
            for part in self._parts[key]:
                self._mark_used(part)

    def shared_seconds(self, computed_by: int | None = None) -> float:
        """Seconds spent on values that several variants used: all of them, or those computed while running
        variant `computed_by`."""
        return sum(
            seconds
            for key, seconds in self._seconds.items()
            if len(self._users[key]) > 1 and computed_by in (None, self._computed_by[key])
        )


class SharedPass:
    """One batch after blocks 1..L-1, and everything the last-block variants derive from it, computed lazily: only
    what some variant (or the trace) asks for runs, and only once."""

    def __init__(
        self,
        visual: _VisionTower,
        images: Tensor,
        features: _BlockFeatures,
        grid: tuple[int, int],
        layers: LayerConfig,
        params: CalibrationParams,
        trace: bool,
    ) -> None:
        self.visual = visual
        self.images = images
        self.block = visual.transformer.resblocks[-1]
        self.features = features
        self.grid = grid
        self.layers = layers
        self.params = params
        self.trace = trace
        self.dtype = features.penultimate.dtype
        self.values = _SharedValues()

    def anomalies(self) -> tuple[Tensor, Tensor]:
        """Anomaly scores and outlier mask of the penultimate patch tokens, (B, N) each."""
        return self.values.get(
            "anomalies", lambda: _detect_anomalies(self.features.penultimate[:, 1:].float(), self.params)
        )

    def resolution(self) -> Tensor:
        """The matrix that resolves the anomalies of any patch tokens of these crops, (B, N, N)."""
        return self.values.get("resolution", lambda: cal.resolution_matrix(self.anomalies()[1], self.grid))

    def _maybe_resolved(self, patches: Tensor, resolved: bool) -> Tensor:
        return self.resolution() @ patches if resolved else patches

    def mid_similarity(self, resolved: bool) -> Tensor:
        """Cosine affinity of the mid-layer patch tokens, after anomaly resolution if `resolved`."""
        return self.values.get(
            ("mid_similarity", resolved),
            lambda: cal.cosine_affinity(self._maybe_resolved(self.features.mid[:, 1:].float(), resolved)),
        )

    def shallow_similarity(self) -> Tensor:
        return self.values.get("shallow_similarity", lambda: cal.cosine_affinity(self.features.shallow[:, 1:].float()))

    def post_weights(self) -> Tensor:
        """The post-aggregation weights from the shallow-layer affinity."""
        return self.values.get(
            "post_weights", lambda: cal.aggregation_weights(self.shallow_similarity(), self.params.beta)
        )

    def prior(self, resolved: bool) -> Tensor:
        """The attention prior from the mid-layer affinity, (B, N, N)."""
        return self.values.get(
            ("prior", resolved),
            lambda: cal.attention_prior(self.mid_similarity(resolved), self.params.prior_temperature),
        )

    def tokens(self, source: Source) -> Tensor:
        """The last block's input tokens from `source`, in the backbone dtype."""
        if source == PENULTIMATE:
            return self.features.penultimate
        if source == MULTI_LEVEL:
            return self.values.get(source, lambda: self.features.multi_level()[:, 1:].to(self.dtype))

        def calibrate() -> Tensor:
            patches = self._maybe_resolved(self.features.penultimate[:, 1:].float(), source.resolved)
            if source.pre_aggregated:
                weights = cal.aggregation_weights(self.mid_similarity(source.resolved), self.params.beta)
                patches = cal.aggregate(weights, patches)
            return patches.to(self.dtype)

        return self.values.get(source, calibrate)

    def projection(self, source: Source, part: str) -> Tensor:
        """The last block's q, k or v of the tokens from `source`, split into heads."""

        def normed() -> Tensor:
            return self.values.get(("ln_1", source), lambda: self.block.ln_1(self.tokens(source)))

        return self.values.get((part, source), lambda: _in_projection(self.block, normed(), part))

    def attention_only(self, sources: Sequence[Source], prior_from: bool | None) -> list[tuple[Tensor, Tensor | None]]:
        """SC-CLIP's attention-only last block on each of `sources`: (B, N, D) float32 before the CLS add-back, and
        its key-key attention map (B, heads, N, N) when tracing.

        The key-key attention is mixed with the prior of the resolved (`prior_from=True`) or raw mid-layer tokens,
        or used alone when `prior_from` is None. The sources not computed yet share one batched attention.
        """
        keys = {("attention_only", source, prior_from): source for source in sources}
        return self.values.get_many(
            list(keys), lambda missing: self._batched_attention_only([keys[key] for key in missing], prior_from)
        )

    def _batched_attention_only(
        self, sources: list[Source], prior_from: bool | None
    ) -> list[tuple[Tensor, Tensor | None]]:
        """`attention_only` for `sources` stacked along the batch: one attention and one output projection for all
        of them."""
        key = _stack([self.projection(source, "k") for source in sources])
        value = _stack([self.projection(source, "v") for source in sources])
        attended, weights = attend(key, key, value, None, self.trace)
        mixed = _merge_heads(attended)
        if prior_from is not None:
            # Every head shares the prior, so it multiplies the values with their heads merged: no copy per head.
            prior = self.prior(prior_from).to(value.dtype)
            prior_values = _stack([prior @ _merge_heads(self.projection(source, "v")) for source in sources])
            mixed = self.params.prior_mix * prior_values + (1 - self.params.prior_mix) * mixed
        outputs = self.block.attn.out_proj(mixed).float().chunk(len(sources))
        maps: Sequence[Tensor | None] = [None] * len(sources) if weights is None else weights.chunk(len(sources))
        return list(zip(outputs, maps))

    def vanilla(self) -> tuple[Tensor, Tensor | None]:
        """CLIP's own last block on all tokens, (B, 1+N, D), and its attention map when tracing."""

        def compute() -> tuple[Tensor, Tensor | None]:
            query, key, value = (self.projection(PENULTIMATE, part) for part in "qkv")
            heads, weights = attend(query, key, value, None, self.trace)
            return residual_block(self.block, self.features.penultimate, heads), weights

        return self.values.get("vanilla", compute)

    def vanilla_views(self) -> tuple[Tensor, Tensor, Tensor]:
        """For traces: CLIP's own last-block attention between patches (heads averaged), the cosine affinity of its
        output patches, and the patch-token norms after every block."""

        def compute() -> tuple[Tensor, Tensor, Tensor]:
            tokens, weights = self.vanilla()
            assert weights is not None, "the vanilla attention map is kept when tracing"
            patches = tokens[:, 1:].float()
            norms = torch.cat([self.features.norms(), patches.norm(dim=2).unsqueeze(1)], dim=1)
            return weights.float().mean(dim=1)[:, 1:, 1:], cal.cosine_affinity(patches), norms

        return self.values.get("vanilla_views", compute)


def _kept_attention(variant: Variant) -> tuple[int, ...]:
    """The frozen blocks whose mean attention `variant`'s last block reads (none for most methods)."""
    spec = METHOD_SPECS[variant.method]
    return () if spec.kept_attention is None else spec.kept_attention(variant.params)


def _stack(tensors: list[Tensor]) -> Tensor:
    """`tensors` concatenated along the batch (no copy for one)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _encode_variant(shared: SharedPass, variant: Variant) -> DenseOutput:
    """One variant's last block, projection and (when tracing) per-crop traces."""
    patches, attention, state = METHOD_SPECS[variant.method].last_block(shared, variant)
    embeddings = project(shared.visual, patches)
    dense = embeddings.reshape(patches.shape[0], *shared.grid, -1)
    if not shared.trace:
        return DenseOutput(patch_embeddings=dense, state=state)
    assert attention is not None, "every last block returns its attention when tracing"
    return DenseOutput(patch_embeddings=dense, trace=_crop_traces(shared, variant, attention, embeddings), state=state)


def encode_dense_variants(
    visual: nn.Module,
    images: Tensor,
    variants: Sequence[Variant],
    *,
    layers: str | LayerConfig = DEFAULT_MODEL,
    params: CalibrationParams | None = None,
    trace: bool = False,
) -> DenseVariants:
    """Dense patch embeddings of a normalised batch `images` (B, 3, H, W) under each of `variants`, in order.

    The stem and blocks 1..L-1 run once; so does anything several variants derive from them (anomaly detection
    runs only if a variant resolves anomalies or `trace` is on). `layers` is a model name with layer settings,
    `auto` or a LayerConfig; `params` holds the hyperparameters the official code hard-codes. With `trace=True` each
    output also carries one CropTrace per image; without it none of that is computed.
    """
    if not variants:
        raise InputError("give at least one variant")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    tower = _check_supported(visual)
    params = params or CalibrationParams()
    chosen = resolve_layers(layers, len(tower.transformer.resblocks))
    keep_multi_level = any(variant.stage_on("multi_level") for variant in variants)
    attention_blocks = [blocks for blocks in dict.fromkeys(map(_kept_attention, variants)) if blocks]
    depth = len(tower.transformer.resblocks)
    for blocks in attention_blocks:
        if not all(0 <= index < depth - 1 for index in blocks):
            raise InputError(f"attention of blocks {list(blocks)} asked for; the frozen blocks are 0..{depth - 2}")
    outputs, seconds = [], []
    with torch.inference_mode():
        start = time.perf_counter()
        tokens, grid = _stem(tower, images)
        features = _run_frozen_blocks(tower, tokens, chosen, keep_multi_level, trace, attention_blocks)
        frozen_seconds = time.perf_counter() - start
        shared = SharedPass(tower, images, features, grid, chosen, params, trace)
        for index, variant in enumerate(variants):
            shared.values.variant = index
            start = time.perf_counter()
            outputs.append(_encode_variant(shared, variant))
            seconds.append(time.perf_counter() - start)
    for index, output in enumerate(outputs):
        output.seconds = seconds[index] - shared.values.shared_seconds(computed_by=index)
    return DenseVariants(outputs=outputs, shared_seconds=frozen_seconds + shared.values.shared_seconds())


def encode_dense(
    visual: nn.Module,
    images: Tensor,
    *,
    layers: str | LayerConfig = DEFAULT_MODEL,
    stages: Stages | None = None,
    method: Method = DEFAULT_METHOD,
    params: CalibrationParams | None = None,
    method_params: Hashable = None,
    trace: bool = False,
) -> DenseOutput:
    """Dense patch embeddings of a normalised batch `images` (B, 3, H, W) under `method`.

    `stages` switches SC-CLIP's calibration steps (all on by default), `method_params` are the method's own
    settings (None: its defaults); the rest is as in `encode_dense_variants`, of which this is the one-variant case.
    """
    variant = Variant(method, stages or Stages(), method_params)
    return encode_dense_variants(visual, images, [variant], layers=layers, params=params, trace=trace).outputs[0]


def _crop_traces(
    shared: SharedPass, variant: Variant, attention_calibrated: Tensor, embeddings: Tensor
) -> list[CropTrace]:
    """Per-crop diagnostics of one variant; the parts that do not depend on the variant are shared."""
    scores, outliers = shared.anomalies()
    resolved = variant.stage_on("anomaly")
    mid_similarity = shared.mid_similarity(resolved)
    shallow_similarity = shared.shallow_similarity()
    vanilla_attention, last_similarity, token_norms = shared.vanilla_views()
    calibrated_similarity = cal.cosine_affinity(embeddings.float())
    vanilla_embeddings = F.normalize(project(shared.visual, shared.vanilla()[0][:, 1:]).float(), dim=-1)
    return [
        CropTrace(
            grid=shared.grid,
            anomaly_indices=outliers[i].nonzero().flatten().cpu(),
            lof_scores=scores[i].cpu(),
            anomalies_resolved=resolved,
            mid_similarity=mid_similarity[i].cpu(),
            shallow_similarity=shallow_similarity[i].cpu(),
            last_similarity=last_similarity[i].cpu(),
            calibrated_similarity=calibrated_similarity[i].cpu(),
            attention_uncalibrated=vanilla_attention[i].cpu(),
            attention_calibrated=attention_calibrated[i].float().cpu(),
            token_norms=token_norms[i].cpu(),
            vanilla_embeddings=vanilla_embeddings[i].cpu(),
            beta=shared.params.beta,
        )
        for i in range(embeddings.shape[0])
    ]
