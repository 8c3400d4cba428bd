"""FIT: local layers on groups of data tokens, global layers on a few latent tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.model import (accept_old_keys, block_context, build_encoder, build_head, build_position, norm_fn,
                                parameter_report, read_out, require_parts)
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.nn.stack import LayerStack
from anyformer.registry import register


class GroupCrossAttention(nn.Module):
    """Pre-norm residual multi-head cross-attention inside each group: queries [N, Tq, D]
    attend to keys/values [N, Tk, D] of the same group (N = batch x groups); kv_mask Bool[N, Tk]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.o_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        N, Tq, D = q.shape
        split = lambda t: t.view(N, t.shape[1], self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        h = self.norm_kv(kv)
        qh, kh, vh = split(self.q_proj(self.norm_q(q))), split(self.k_proj(h)), split(self.v_proj(h))
        attn_mask = None
        if kv_mask is not None:
            # A fully padded group attends to its first slot instead of nothing (no NaN);
            # only padded outputs read it.
            safe = kv_mask.clone()
            safe[~kv_mask.any(1), 0] = True
            attn_mask = safe[:, None, None, :]
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)
        return q + self.o_proj(out.transpose(1, 2).reshape(N, Tq, D))


@register("arch", "fit")
class FarReachingInterleavedTransformer(nn.Module):
    """FIT (Chen & Li 2023), encoder mode: tokens [B, L, D] are cut into L / group_size groups,
    each with `latents` learned latent tokens. Each of model.depth FIT blocks runs
    `local_layers` Transformer layers inside every group, lets each group's latents read
    their group's data tokens (cross-attention), runs `global_layers` Transformer layers
    over all latents of the sample, and writes back (data tokens cross-attend to their
    group's latents). Final norm and head read the data tokens.

    `stack` numbers the Transformer layers local ones first: FIT block i's j-th local layer
    is layer i * local_layers + j, its j-th global layer depth * local_layers + i *
    global_layers + j; `schedule.drop` / `schedule.prune` use these indices."""

    paper = "FIT: Far-reaching Interleaved Transformers (Chen & Li 2023)"

    @staticmethod
    def layer_count(config: ModelConfig, local_layers: int = 1, global_layers: int = 1, **_: object) -> int:
        """Transformer layers this arch builds for `config`: read by the size guard before
        anything is built (an absurd local_layers spent seconds laying out its stack)."""
        return config.depth * (local_layers + global_layers)

    def __init__(self, config: ModelConfig, group_size: Count = 16, latents: Count = 4,
                 local_layers: NonNegativeInt = 1, global_layers: NonNegativeInt = 1) -> None:
        super().__init__()
        self.config = c = config
        require_parts(c)
        if c.causal:
            raise ConfigError("arch 'fit' is built in encoder mode and cannot be causal; set model.causal: false")
        if c.schedule.share or c.schedule.transition is not None or c.schedule.overrides or c.schedule.repeat > 1:
            raise ConfigError("arch 'fit' builds its own layer layout; model.schedule.share/repeat/overrides/transition are not supported")
        self.encoder = build_encoder(c)
        L = self.encoder.num_tokens
        if group_size < 1 or L % group_size:
            sizes = [g for g in range(1, L + 1) if L % g == 0]
            raise ConfigError(f"arch 'fit': group_size {group_size} must divide the {L} tokens of encoder {c.encoder.name!r}; valid: {sizes}")
        self.group_size, self.num_groups, self.num_latents = group_size, L // group_size, latents
        self.local_layers, self.global_layers = local_layers, global_layers
        self.position = build_position(c, L)
        self.input_drop = nn.Dropout(c.dropout)
        n_local, n_global = c.depth * local_layers, c.depth * global_layers
        lengths = [group_size] * n_local + [self.num_groups * latents] * n_global
        self.stack = LayerStack(c, block_context(c, self.encoder, self.position), lengths, depth=n_local + n_global)
        self.reads = nn.ModuleList(GroupCrossAttention(c.dim, c.heads) for _ in range(c.depth))
        self.writes = nn.ModuleList(GroupCrossAttention(c.dim, c.heads) for _ in range(c.depth))
        self.latent_init = nn.Parameter(torch.randn(self.num_groups, latents, c.dim) * 0.02)
        self.final_norm = norm_fn(c)("final") if c.final_norm else None
        self.head = build_head(c, self.encoder, L)
        # Earlier versions: local_blocks.k, global_blocks.k, and `blocks` listing both (the stack's order).
        accept_old_keys(self, {"blocks.": "stack.blocks.", "local_blocks.": "stack.blocks.",
                               **{f"global_blocks.{k}.": f"stack.blocks.{n_local + k}." for k in range(n_global)}})

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @self_ensembled
    def forward(self, x, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        if self.position.applies_to == "input":
            tokens = self.position(tokens)
        B, L, D = tokens.shape
        if L != self.num_groups * self.group_size:
            # Shorter inputs are padded up to whole groups (masked out).
            pad = self.num_groups * self.group_size - L
            tokens = F.pad(tokens, (0, 0, 0, pad))
            real = torch.ones(B, L, dtype=torch.bool, device=tokens.device) if mask is None else mask
            mask = F.pad(real, (0, pad), value=False)
        data = self.input_drop(tokens).reshape(B * self.num_groups, self.group_size, D)
        gmask = None if mask is None else mask.reshape(B * self.num_groups, self.group_size)
        # repeat (a copy), not expand: a reshaped expand can stay a view of the parameter,
        # which under no_grad requires grad yet has no grad_fn and trips module hooks.
        z = self.latent_init.to(data.dtype).repeat(B, 1, 1, 1).reshape(B * self.num_groups, self.num_latents, D)
        # Latents of a group with no real token read only padding: global layers skip them.
        zmask = None if gmask is None else gmask.any(1).view(B, self.num_groups).repeat_interleave(self.num_latents, 1)
        hidden: list[torch.Tensor] = []
        first_global = self.config.depth * self.local_layers
        for i in range(self.config.depth):
            local = i * self.local_layers
            data, _ = self.stack.run(local, local + self.local_layers, data, gmask)
            z = self.reads[i](z, data, gmask)
            z = z.reshape(B, self.num_groups * self.num_latents, D)
            glob = first_global + i * self.global_layers
            z, _ = self.stack.run(glob, glob + self.global_layers, z, zmask)
            z = z.reshape(B * self.num_groups, self.num_latents, D)
            data = self.writes[i](data, z)
            hidden.append(data.reshape(B, -1, D)[:, :L])
        out_mask = None if mask is None else mask[:, :L]
        return read_out(self, data.reshape(B, -1, D)[:, :L], out_mask, hidden, return_hidden)

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part; the cross-attentions and latents count in 'total' only."""
        return parameter_report(self, self.position, self.stack.transitions)
