"""Dense patch embeddings from a CLIP vision transformer: SC-CLIP and the methods it is compared with.

`encode_dense` runs the frozen stem and blocks 1..L-1 once, keeping only the block outputs the method needs,
then replaces the last block: by SC-CLIP's calibrated attention-only block (each stage under a flag) or by a
comparison method's variant. Crops are processed as one batch; anomaly detection is per crop.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import calibration as cal
from .presets import METHODS, CalibrationParams, LayerPreset, Stages, resolve_layers


@dataclass
class CropTrace:
    """What one crop looked like inside the encoder, for visualisation (CPU float32 tensors)."""

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
    beta: float
    window: tuple[int, int, int, int] | None = None


@dataclass
class DenseOutput:
    """`patch_embeddings` is (B, H/p, W/p, E): after `ln_post` and `proj`, not normalised."""

    patch_embeddings: Tensor
    trace: list[CropTrace] | None = None


@dataclass
class _BlockFeatures:
    """The block outputs (B, 1+N, D) that the last-block variants read; the rest are never kept."""

    penultimate: Tensor
    mid: Tensor
    shallow: Tensor
    multi_level_sum: Tensor | None
    token_norms: Tensor | None


def _stem(visual: nn.Module, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Patch embedding, CLS token and (bicubically interpolated) positional embedding, then `ln_pre`."""
    dtype = visual.conv1.weight.dtype
    patches = visual.conv1(images.to(dtype))
    grid = (patches.shape[2], patches.shape[3])
    tokens = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(dtype).expand(tokens.shape[0], 1, -1)
    tokens = torch.cat([cls, tokens], dim=1)
    return visual.ln_pre(tokens + _positional_embedding(visual, grid).to(dtype)), grid


def _positional_embedding(visual: nn.Module, grid: tuple[int, int]) -> Tensor:
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
        raise ValueError(f"positional embedding resized to {tuple(resized.shape[2:])} instead of {grid}")
    return torch.cat([embedding[:1].float(), resized.reshape(embedding.shape[1], -1).T]).to(embedding.dtype)


def _check_supported(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing or getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
        raise TypeError(
            "encode_dense needs an open_clip VisionTransformer with a CLS token and no attention pooling "
            f"(missing: {missing or 'none'}); timm and CoCa towers are not supported"
        )


def _run_frozen_blocks(
    visual: nn.Module, tokens: Tensor, layers: LayerPreset, keep_multi_level: bool, trace: bool
) -> _BlockFeatures:
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    kept: dict[int, Tensor] = {}
    multi_level_sum = None
    norms = []
    x = tokens if batch_first else tokens.transpose(0, 1)
    for index, block in enumerate(blocks[:-1]):
        x = block(x)
        out = x if batch_first else x.transpose(0, 1)
        if index in (layers.pre_adjust_idx, layers.post_adjust_idx):
            kept[index] = out
        if keep_multi_level and layers.multi_start_idx <= index < layers.multi_end_idx:
            multi_level_sum = out.float() if multi_level_sum is None else multi_level_sum + out.float()
        if trace:
            norms.append(out[:, 1:].float().norm(dim=2))
    penultimate = x if batch_first else x.transpose(0, 1)
    return _BlockFeatures(
        penultimate=penultimate,
        mid=kept[layers.pre_adjust_idx],
        shallow=kept[layers.post_adjust_idx],
        multi_level_sum=multi_level_sum,
        token_norms=torch.stack(norms, dim=1) if trace else None,
    )


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, num_heads, width // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _qkv(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The last block's q, k, v for `ln_1(x)`, split into heads: each (B, heads, T, d)."""
    attn = block.attn
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return tuple(_split_heads(t, attn.num_heads) for t in (q, k, v))


def _softmax_attention(query: Tensor, key: Tensor, bias: Tensor | None = None) -> Tensor:
    logits = (query @ key.transpose(-2, -1)) * query.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    return logits.softmax(dim=-1)


def _attend(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, want_map: bool) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v, fused unless the attention map itself is wanted."""
    if want_map:
        weights = _softmax_attention(query, key, bias)
        return weights @ value, weights
    mask = None if bias is None else bias.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask), None


def _out_proj(block: nn.Module, heads: Tensor) -> Tensor:
    return block.attn.out_proj(_merge_heads(heads))


def _project(visual: nn.Module, tokens: Tensor) -> Tensor:
    return visual.ln_post(tokens) @ visual.proj


def _detect_anomalies(patches: Tensor, params: CalibrationParams) -> tuple[Tensor, Tensor]:
    """Per-crop anomaly scores (LOF, or the L2 norm for the norm detector) and the bool outlier mask."""
    if params.detector == "lof":
        scores = cal.lof_scores(patches, params.lof_k)
        return scores, cal.outliers_by_quantile(scores, params.contamination)
    return patches.norm(dim=2), cal.outliers_by_norm(patches, params.contamination)


def _scclip_last_block(
    block: nn.Module,
    features: _BlockFeatures,
    grid: tuple[int, int],
    layers: LayerPreset,
    stages: Stages,
    params: CalibrationParams,
    want_maps: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SC-CLIP's steps 3-9 up to (but not including) `ln_post`; returns (B, N, D) and traced pieces."""
    dtype = features.penultimate.dtype
    patches = features.penultimate[:, 1:].float()
    cls = features.penultimate[:, 0].float()
    mid = features.mid[:, 1:].float()

    scores, outliers = _detect_anomalies(patches, params)
    if stages.anomaly:
        patches = cal.resolve_anomalies(patches, outliers, grid)
        mid = cal.resolve_anomalies(mid, outliers, grid)

    mid_similarity = cal.cosine_affinity(mid)
    if stages.pre_aggregation:
        patches = cal.aggregate(cal.aggregation_weights(mid_similarity, params.beta), patches)
    prior = cal.attention_prior(mid_similarity, params.prior_temperature) if stages.attention_prior else None

    passes = [patches]
    cls_terms = [cls]
    if stages.multi_level:
        passes.append(features.multi_level_sum[:, 1:])
        cls_terms.append(features.multi_level_sum[:, 0])
    stacked = torch.cat(passes).to(dtype)
    q, k, v = _qkv(block, stacked)
    key_attention, key_map = _attend(k, k, v, None, want_maps)
    if prior is None:
        mixed = key_attention
    else:
        prior_heads = prior.repeat(len(passes), 1, 1).unsqueeze(1)
        mixed = params.prior_mix * (prior_heads.to(v.dtype) @ v) + (1 - params.prior_mix) * key_attention
    outputs = _out_proj(block, mixed).float()
    outputs = outputs + layers.res_cls * torch.cat(cls_terms).unsqueeze(1)

    shallow_similarity = cal.cosine_affinity(features.shallow[:, 1:].float())
    per_pass = outputs.chunk(len(passes))
    if stages.post_aggregation:
        post_weights = cal.aggregation_weights(shallow_similarity, params.beta)
        per_pass = [cal.aggregate(post_weights, out) for out in per_pass]
    result = torch.stack(per_pass).sum(dim=0)

    traced: dict[str, Tensor] = {}
    if want_maps:
        batch = patches.shape[0]
        key_mean = key_map[:batch].float().mean(dim=1)
        calibrated = key_mean if prior is None else params.prior_mix * prior + (1 - params.prior_mix) * key_mean
        traced = {
            "outliers": outliers,
            "scores": scores,
            "mid_similarity": mid_similarity,
            "shallow_similarity": shallow_similarity,
            "attention_calibrated": calibrated,
        }
    return result.to(dtype), traced


def _baseline_last_block(
    method: str, block: nn.Module, x: Tensor, grid: tuple[int, int], params: CalibrationParams, want_maps: bool
) -> tuple[Tensor, Tensor | None]:
    """The comparison methods' last blocks on all tokens (CLS included); returns (B, 1+N, D) and attention."""
    q, k, v = _qkv(block, x)
    if method == "maskclip":
        out = _out_proj(block, v)
        weights = torch.eye(x.shape[1], device=x.device).expand(x.shape[0], 1, -1, -1) if want_maps else None
        return out, weights
    if method == "clip":
        heads, weights = _attend(q, k, v, None, want_maps)
        x = x + block.ls_1(_out_proj(block, heads))
        return x + block.ls_2(block.mlp(block.ln_2(x))), weights
    if method == "sclip":
        query_out, query_map = _attend(q, q, v, None, want_maps)
        key_out, key_map = _attend(k, k, v, None, want_maps)
        x = x + block.ls_1(_out_proj(block, query_out + key_out))
        weights = query_map + key_map if want_maps else None
        return x + block.ls_2(block.mlp(block.ln_2(x))), weights
    if method == "clearclip":
        heads, weights = _attend(q, q, v, None, want_maps)
        return _out_proj(block, heads), weights
    if method == "naclip":
        num_tokens = x.shape[1]
        bias = torch.zeros(num_tokens, num_tokens, device=x.device)
        bias[1:, 1:] = cal.gaussian_neighbourhood(grid, params.naclip_sigma, x.device)
        heads, weights = _attend(k, k, v, bias, want_maps)
        return _out_proj(block, heads), weights
    raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")


def encode_dense(
    visual: nn.Module,
    images: Tensor,
    *,
    layers: str | LayerPreset = "ViT-B/16",
    stages: Stages | None = None,
    method: str = "sc-clip",
    params: CalibrationParams | None = None,
    trace: bool = False,
) -> DenseOutput:
    """Dense patch embeddings of a normalised batch `images` (B, 3, H, W) under `method`.

    `layers` is a preset name or a LayerPreset; `stages` switches SC-CLIP's calibration steps (all on by
    default); `params` holds the hyperparameters the official code hard-codes. With `trace=True` the output also
    carries one CropTrace per image; without it none of that is computed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    _check_supported(visual)
    stages = stages or Stages()
    params = params or CalibrationParams()
    blocks = visual.transformer.resblocks
    preset = resolve_layers(layers, len(blocks))
    last_block = blocks[-1]

    with torch.inference_mode():
        tokens, grid = _stem(visual, images)
        keep_multi = method == "sc-clip" and stages.multi_level
        features = _run_frozen_blocks(visual, tokens, preset, keep_multi, trace)
        if method == "sc-clip":
            patches, traced = _scclip_last_block(last_block, features, grid, preset, stages, params, trace)
        else:
            output, weights = _baseline_last_block(method, last_block, features.penultimate, grid, params, trace)
            patches = output[:, 1:]
            traced = {"attention_calibrated": weights.float().mean(dim=1)[:, 1:, 1:]} if trace else {}
        embeddings = _project(visual, patches)
        batch = images.shape[0]
        dense = embeddings.reshape(batch, grid[0], grid[1], -1)
        crop_traces = _build_traces(visual, features, grid, params, stages, method, traced, embeddings) if trace else None
    return DenseOutput(patch_embeddings=dense, trace=crop_traces)


def _build_traces(
    visual: nn.Module,
    features: _BlockFeatures,
    grid: tuple[int, int],
    params: CalibrationParams,
    stages: Stages,
    method: str,
    traced: dict[str, Tensor],
    embeddings: Tensor,
) -> list[CropTrace]:
    """Per-crop diagnostics; the method-independent parts are computed here when the method did not."""
    last_block = visual.transformer.resblocks[-1]
    penultimate = features.penultimate
    patches = penultimate[:, 1:].float()
    if "scores" not in traced:
        traced["scores"], traced["outliers"] = _detect_anomalies(patches, params)
        traced["mid_similarity"] = cal.cosine_affinity(features.mid[:, 1:].float())
        traced["shallow_similarity"] = cal.cosine_affinity(features.shallow[:, 1:].float())
    vanilla_tokens, vanilla_weights = _baseline_last_block("clip", last_block, penultimate, grid, params, True)
    vanilla_attention = vanilla_weights.float().mean(dim=1)[:, 1:, 1:]
    last_similarity = cal.cosine_affinity(vanilla_tokens[:, 1:].float())
    calibrated_similarity = cal.cosine_affinity(embeddings.float())
    last_norms = vanilla_tokens[:, 1:].float().norm(dim=2).unsqueeze(1)
    token_norms = torch.cat([features.token_norms, last_norms], dim=1)
    return [
        CropTrace(
            grid=grid,
            anomaly_indices=traced["outliers"][i].nonzero().flatten().cpu(),
            lof_scores=traced["scores"][i].cpu(),
            anomalies_resolved=method == "sc-clip" and stages.anomaly,
            mid_similarity=traced["mid_similarity"][i].cpu(),
            shallow_similarity=traced["shallow_similarity"][i].cpu(),
            last_similarity=last_similarity[i].cpu(),
            calibrated_similarity=calibrated_similarity[i].cpu(),
            attention_uncalibrated=vanilla_attention[i].cpu(),
            attention_calibrated=traced["attention_calibrated"][i].float().cpu(),
            token_norms=token_norms[i].cpu(),
            beta=params.beta,
        )
        for i in range(penultimate.shape[0])
    ]
