"""Prefix-shared prompt encoding: each template's shared token prefix runs once, each prompt only its own tokens.

The text tower's attention is causal, so the tokens before the class name (the start token and "a photo of a")
have the same keys and values in every prompt of a template. They run once per template, keeping each layer's
keys and values; each prompt then runs only its remaining tokens (class name and template suffix) at their true
positions, attending to the cached prefix and to itself under the causal mask, and is pooled at the token that
open_clip pools at. Prompts are grouped by how many tokens they still run, so no batch is padded. The result
equals open_clip's `encode_text` of the full prompts up to float rounding; `SharedPrefixTower.of` admits only
the text towers whose form this module re-implements, and anything else keeps open_clip's own forward.

A template's prefix up to the class name is the same in every call, so `KeptPrefixes` keeps it across calls: run
once, it serves every later call whose prompts all start with exactly its tokens (checked on each call), which is
what makes calls of one or two names (the demo's turns) cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import ResidualAttentionBlock, TextTransformer, Transformer, text_global_pool
from torch import Tensor, nn

POOL_TYPES = ("argmax", "eos")  # pooling at one token of each prompt, found from its tokens as open_clip does


@dataclass(frozen=True)
class KeptPrefixes:
    """Each template's prefix, run once and kept (`SharedPrefixTower.keep_prefixes`) for the calls it fits.

    Read-only once made, so calls on several threads may share it.
    """

    tokens: Tensor  # (T, P): each template's prefix tokens, zero after its length
    lengths: Tensor  # (T,): each template's prefix length
    keys_values: tuple[tuple[Tensor, Tensor], ...]  # per layer: keys, values (T, H, P, D/H), zero after each length

    def fit(self, tokens: Tensor, ends: Tensor, dtype: torch.dtype) -> Tensor:
        """(T,) for prompts (N, T, L) pooled at `ends` (N, T): whether every prompt of a template starts with
        exactly its kept prefix and is pooled after it, in a tower computing in `dtype` on the prompts' device."""
        templates, longest = self.tokens.shape
        keys = self.keys_values[0][0]
        if tokens.shape[1] != templates or keys.dtype != dtype or keys.device != tokens.device:
            return ends.new_zeros(templates, dtype=torch.bool)
        within = torch.arange(longest, device=tokens.device) < self.lengths[:, None]
        same = ((tokens[:, :, :longest] == self.tokens) | ~within).all(dim=2).all(dim=0)
        return same & (self.lengths <= ends.min(dim=0).values)

    @property
    def nbytes(self) -> int:
        """The memory the kept prefixes hold."""
        held = [self.tokens, self.lengths, *(part for layer in self.keys_values for part in layer)]
        return sum(t.numel() * t.element_size() for t in held)


@dataclass(frozen=True)
class SharedPrefixTower:
    """The parts of a causal open_clip text tower that prefix-shared encoding runs, in the tower's own modules."""

    token_embedding: nn.Module
    positional_embedding: Tensor
    blocks: tuple[ResidualAttentionBlock, ...]
    ln_final: nn.Module
    projection: nn.Module | Tensor | None
    pool_type: str
    eos_id: int | None

    @classmethod
    def of(cls, clip: nn.Module) -> SharedPrefixTower | None:
        """The tower of `clip` when prefix sharing is exact for it, else None (the caller keeps open_clip's forward).

        Admitted: open_clip's `CLIP`, or a `CustomTextCLIP` whose text tower is a `TextTransformer` without a
        class token or padding mask, with a causal attention mask, argmax or end-token pooling, and plain
        `ResidualAttentionBlock`s around `nn.MultiheadAttention` (no cross-attention, extra key/value biases or
        dropout).
        """
        if isinstance(clip, CLIP):
            text: nn.Module = clip
            pool_type, eos_id = clip.text_pool_type, getattr(clip, "text_eos_id", None)
        elif isinstance(clip, CustomTextCLIP) and type(clip.text) is TextTransformer:
            text = clip.text
            if text.cls_emb is not None or text.use_pad_mask or text.output_tokens:
                return None
            pool_type, eos_id = text.pool_type, getattr(text, "eos_id", None)
        else:
            return None
        transformer, mask = getattr(text, "transformer", None), getattr(text, "attn_mask", None)
        if transformer is None or type(transformer) is not Transformer:
            return None
        if pool_type not in POOL_TYPES or not _is_causal(mask):
            return None
        blocks = tuple(block for block in transformer.resblocks if _is_plain_block(block))
        embedding, positions, ln_final = text.token_embedding, text.positional_embedding, text.ln_final
        if not blocks or len(blocks) != len(transformer.resblocks):
            return None
        if not (isinstance(embedding, nn.Module) and isinstance(positions, Tensor) and isinstance(ln_final, nn.Module)):
            return None
        projection = text.text_projection
        return cls(
            token_embedding=embedding,
            positional_embedding=positions,
            blocks=blocks,
            ln_final=ln_final,
            projection=projection if isinstance(projection, nn.Module | Tensor) else None,
            pool_type=pool_type,
            eos_id=eos_id,
        )

    def encode(self, tokens: Tensor, batch_size: int = 512, kept: KeptPrefixes | None = None) -> Tensor:
        """Unnormalised text features of N names x T templates of tokenised prompts, (N, T, L) -> (N, T, E).

        A template whose `kept` prefix fits this call (`KeptPrefixes.fit`) starts from it; any other template's
        prefix is the longest token prefix its N prompts share (start token included), cut so that every prompt
        keeps its pooled token, and runs in this call. Then the prompts' remaining tokens run in batches of at
        most `batch_size` prompts that all run the same number of tokens.
        """
        names, templates, _ = tokens.shape
        if names == 0 or templates == 0:
            return torch.empty(names, templates, self.width, dtype=self.dtype, device=tokens.device)
        prefix_lengths, ends = self.split(tokens)
        reused = kept.fit(tokens, ends, self.dtype) if kept is not None else ends.new_zeros(templates, dtype=torch.bool)
        features = torch.empty(names * templates, self.width, dtype=self.dtype, device=tokens.device)
        if kept is not None and bool(reused.any()):
            self._run_prompts(tokens, ends, reused, kept.lengths, kept.keys_values, batch_size, features)
        if not bool(reused.all()):
            fresh = ~reused
            prefix_cache = self._run_prefixes(tokens[0], prefix_lengths * fresh)
            self._run_prompts(tokens, ends, fresh, prefix_lengths, prefix_cache, batch_size, features)
        return features.view(names, templates, -1)

    def keep_prefixes(self, tokens: Tensor) -> KeptPrefixes:
        """The prefixes that the prompts (K, T, L) of K probe names share, run once to be reused by later calls.

        With probe names whose first tokens differ, each template's shared prefix stops before the name; a later
        call reuses a template's prefix only where its prompts start with exactly these tokens, so the probes
        choose how much is kept, never whether a result is exact.
        """
        lengths = self.split(tokens)[0]
        longest = int(lengths.max())
        within = torch.arange(longest, device=tokens.device) < lengths[:, None]
        return KeptPrefixes(tokens[0, :, :longest] * within, lengths, tuple(self._run_prefixes(tokens[0], lengths)))

    def _run_prompts(
        self,
        tokens: Tensor,
        ends: Tensor,
        selected: Tensor,
        prefix_lengths: Tensor,
        prefix_cache: Sequence[tuple[Tensor, Tensor]],
        batch_size: int,
        features: Tensor,
    ) -> None:
        """Write into `features` (N * T, E) those of the prompts (N, T, L) of the `selected` templates (T,), each
        running its tokens after its template's prefix (of `prefix_lengths`, in `prefix_cache`) up to its end."""
        names, templates, context = tokens.shape
        template_of = torch.arange(templates, device=tokens.device).repeat(names)
        rows = selected[template_of].nonzero().squeeze(1)
        starts = prefix_lengths[template_of[rows]]
        lengths = ends.flatten()[rows] + 1 - starts
        order = torch.argsort(lengths * (context + 1) + starts, stable=True)  # by length run, then prefix length
        rows, starts, lengths = rows[order], starts[order], lengths[order]
        flat_tokens = tokens.flatten(0, 1)
        offset = 0
        for length, count in zip(*(t.tolist() for t in torch.unique_consecutive(lengths, return_counts=True))):
            for begin in range(offset, offset + count, batch_size):
                batch = slice(begin, min(begin + batch_size, offset + count))
                features[rows[batch]] = self._run_suffixes(
                    flat_tokens[rows[batch]], starts[batch], length, prefix_cache, template_of[rows[batch]]
                )
            offset += count

    def split(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Where `encode` splits (N, T, L) prompts: each template's prefix length (T,) and each prompt's pooled
        position (N, T). A prompt runs its tokens from its template's prefix length up to its pooled position."""
        ends = self._pooled_positions(tokens.flatten(0, 1)).view(tokens.shape[:2])
        same = (tokens == tokens[:1]).all(dim=0)  # (T, L): positions where every name's prompt has the same token
        return torch.minimum(same.int().cumprod(dim=1).sum(dim=1), ends.min(dim=0).values), ends

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the tower computes in: its blocks' weights' (open_clip's `get_cast_dtype`)."""
        return self.blocks[0].get_weight_dtype()

    @property
    def width(self) -> int:
        """The width of the features `encode` returns."""
        projection = self.projection
        if isinstance(projection, nn.Linear):
            return projection.out_features
        if isinstance(projection, Tensor):
            return projection.shape[1]
        return self.positional_embedding.shape[1]

    def _pooled_positions(self, tokens: Tensor) -> Tensor:
        """For each prompt (P, L), the position open_clip's `text_global_pool` takes its features from."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        return text_global_pool(positions.unsqueeze(-1), tokens, self.pool_type, eos_token_id=self.eos_id).squeeze(-1)

    def _run_prefixes(self, tokens: Tensor, lengths: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's keys and values (T, H, P, D/H) of the T template prefixes, zero after each one's length.

        Templates whose prefixes have the same length run together, so no prefix runs padding.
        """
        templates, longest = len(tokens), int(lengths.max())
        heads = self.blocks[0].attn.num_heads
        shape = (templates, heads, longest, self.positional_embedding.shape[1] // heads)
        cache = [
            (tokens.new_zeros(shape, dtype=self.dtype), tokens.new_zeros(shape, dtype=self.dtype)) for _ in self.blocks
        ]
        for length in lengths[lengths > 0].unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            positions = torch.arange(length, device=tokens.device)
            x = self._embed(tokens[rows, :length], positions)
            causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            for block, (keys, values) in zip(self.blocks, cache):
                x, keys[rows, :, :length], values[rows, :, :length] = _block_forward(
                    block, x, None, causal, keep_last_only=False
                )
        return cache

    def _run_suffixes(
        self,
        tokens: Tensor,
        starts: Tensor,
        length: int,
        prefix_cache: Sequence[tuple[Tensor, Tensor]],
        templates: Tensor,
    ) -> Tensor:
        """Features (B, E) of B prompts (B, L) that each run `length` tokens from `starts`, their prefix lengths."""
        positions = starts[:, None] + torch.arange(length, device=tokens.device)
        x = self._embed(tokens.gather(1, positions), positions)
        prefix = int(starts.max())  # the batch's longest prefix: the keys beyond it are every prompt's padding
        visible = torch.arange(prefix, device=tokens.device) < starts[:, None]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        mask = torch.cat([visible[:, None, :].expand(-1, length, -1), causal.expand(len(tokens), -1, -1)], dim=2)
        for index, (block, (keys, values)) in enumerate(zip(self.blocks, prefix_cache)):
            past = (keys[:, :, :prefix], values[:, :, :prefix], templates)
            x = _block_forward(block, x, past, mask.unsqueeze(1), keep_last_only=index == len(self.blocks) - 1)[0]
        pooled = self.ln_final(x[:, -1])
        projection = self.projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Module) else pooled @ projection

    def _embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Token plus positional embeddings at the tokens' true positions, in the tower's dtype (as open_clip)."""
        return self.token_embedding(tokens).to(self.dtype) + self.positional_embedding[positions].to(self.dtype)


def _is_causal(mask: Tensor | None) -> bool:
    """Whether `mask` is open_clip's additive causal mask: -inf above the diagonal, zero elsewhere."""
    if not isinstance(mask, Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.equal(mask.isneginf(), above) and (mask[~above] == 0).all())


def _is_plain_block(block: nn.Module) -> bool:
    """Whether `block` is a `ResidualAttentionBlock` whose attention `_block_forward` re-implements exactly."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    return (
        type(attn) is nn.MultiheadAttention
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and attn.bias_v is None
        and not attn.add_zero_attn
        and attn.dropout == 0.0
    )


def _block_forward(
    block: ResidualAttentionBlock,
    x: Tensor,
    past: tuple[Tensor, Tensor, Tensor] | None,
    mask: Tensor,
    *,
    keep_last_only: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One open_clip `ResidualAttentionBlock` on x (B, S, D), its attention also over cached `past` keys.

    `past` is (keys, values, rows): cached keys and values (T, H, P, D/H), and which of the T each of the B
    prompts attends to. `mask` (boolean, True = visible) covers the P past and S own keys. Returns the block's
    output and this layer's own keys and values (B, H, S, D/H). With `keep_last_only`, only the last position's
    output is computed (B, 1, D): the last layer's pooled token needs no other.
    """
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    query, key, value = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    query, key, value = (t.view(batch, length, heads, width // heads).transpose(1, 2) for t in (query, key, value))
    all_keys, all_values = key, value
    if past is not None:
        all_keys, all_values = (_after_past(cached, past[2], own) for cached, own in ((past[0], key), (past[1], value)))
    if keep_last_only:
        x, query, mask = x[:, -1:], query[:, :, -1:], mask[..., -1:, :]
    attended = F.scaled_dot_product_attention(query, all_keys, all_values, attn_mask=mask)
    attended = attn.out_proj(attended.transpose(1, 2).reshape(batch, x.shape[1], width))
    x = x + block.ls_1(attended)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, key, value


def _after_past(cached: Tensor, rows: Tensor, own: Tensor) -> Tensor:
    """[cached[rows]; own] along the sequence (B, H, P + S, D/H), written in place (one copy of each part)."""
    prefix = cached.shape[2]
    joined = own.new_empty(own.shape[0], own.shape[1], prefix + own.shape[2], own.shape[3])
    torch.index_select(cached, 0, rows, out=joined[:, :, :prefix])
    joined[:, :, prefix:] = own
    return joined
