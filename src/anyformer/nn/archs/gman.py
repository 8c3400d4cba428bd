"""GMAN: a graph multi-attention encoder-decoder forecasting every sensor of a road graph."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.archs.gman_attention import STAttentionBlock, SpatioTemporalEmbedding, TransformAttention, two_layer_fc
from anyformer.nn.model import build_encoder, refuse_mixer, refuse_schedule, require_parts
from anyformer.nn.stack import parameter_counter


@registry.register("arch", "gman")
class GMAN(nn.Module):
    """GMAN (Zheng et al. 2020): the `sensor-readings` encoder's P past readings of N sensors
    -> forecast [B, Q, N] of the next Q = model.head.horizon steps, in the data's units.

    STE = FC(SE) + FC(TE) for the P + Q steps (SE: the sensor graph's Laplacian eigenvectors,
    or none with `spatial_embedding: none`, the ablation); model.depth residual ST-Attention
    blocks (spatial attention over the sensors at each step, temporal attention over each
    sensor's steps, both from [H, STE], joined by a gate) on the past; transform attention
    (queries: the future STE, keys: the past STE, values: the encoder output); model.depth
    decoder blocks; a 2-layer output FC. `spatial_attention: false` with `spatial_embedding:
    none` is a per-sensor forecaster that sees no other sensor (nor which sensor it is).
    GMAN builds its own attention: model.mixer, ffn, norm and position do not apply.
    Hidden states: each encoder block's output [B, P * N, D]."""

    paper = "GMAN: A Graph Multi-Attention Network for Traffic Prediction (Zheng et al. 2020)"
    supports_token_filter = False
    builds_own_mixer = True  # model.mixer does not apply; refuse_mixer says so
    example_config = {"dim": 32, "heads": 4, "depth": 2, "dropout": 0.0, "position": "none", "max_len": 3,
                      "arch": {"name": "gman"},
                      "encoder": {"name": "sensor-readings", "sensors": 4, "horizon": 2, "spatial_size": 3, "steps_per_day": 6},
                      "head": {"name": "forecast", "horizon": 2}}

    def __init__(self, config: ModelConfig, spatial_embedding: Literal["laplacian", "none"] = "laplacian",
                 spatial_attention: bool = True, causal_temporal: bool = True) -> None:
        super().__init__()
        self.config = c = config
        require_parts(c)
        refuse_mixer(c, "gman")
        refuse_schedule(c, "gman")
        if c.position.name != "none":
            raise ConfigError(f"arch 'gman' encodes time by its temporal embedding, so position {c.position.name!r} cannot apply; "
                              "set model.position: none")
        if c.dim % c.heads:
            raise ConfigError(f"arch 'gman': model.dim {c.dim} must be a multiple of model.heads {c.heads}")
        self.encoder = build_encoder(c)
        if getattr(self.encoder, "modality", None) != "spatiotemporal":
            raise ConfigError(f"arch 'gman' reads sensor readings on a graph: use encoder 'sensor-readings', not {c.encoder.name!r}")
        if c.head.name != "forecast":
            raise ConfigError(f"arch 'gman' forecasts: model.head must be 'forecast', got {c.head.name!r}")
        self.horizon = int(c.head.options.get("horizon", self.encoder.horizon))
        if self.horizon != self.encoder.horizon:
            raise ConfigError(f"arch 'gman': model.head.horizon {self.horizon} differs from the encoder's horizon "
                              f"{self.encoder.horizon} (the future steps whose time it is given); set both alike")
        self.spatial_embedding, self.spatial_attention = spatial_embedding, spatial_attention
        self.causal_temporal = causal_temporal
        spatial_size = self.encoder.spatial_size if spatial_embedding == "laplacian" else None
        self.embedding = SpatioTemporalEmbedding(c.dim, spatial_size, self.encoder.steps_per_day)
        self.encoder_blocks = nn.ModuleList(STAttentionBlock(c.dim, c.heads, spatial_attention, causal_temporal) for _ in range(c.depth))
        self.transform = TransformAttention(c.dim, c.heads)
        self.decoder_blocks = nn.ModuleList(STAttentionBlock(c.dim, c.heads, spatial_attention, causal_temporal) for _ in range(c.depth))
        self.head = nn.Sequential(*two_layer_fc(c.dim, c.dim)[:2], nn.Linear(c.dim, 1))

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def sees_other_sensors(self) -> bool:
        """Whether a sensor's forecast can depend on another sensor's readings."""
        return self.spatial_attention

    @property
    def reaches_every_token(self) -> bool:
        """Whether every encoder token's last state depends on every input token: only
        without causal temporal attention, with spatial attention and at least two blocks
        (one block joins a token to its own step and its own sensor only). The forecast
        itself reads every input token in every variant."""
        return self.spatial_attention and not self.causal_temporal and self.config.depth >= 2

    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, _ = self.encoder(x, mask)
        B, P, N = tokens.shape[0], self.encoder.steps_in, self.encoder.sensors
        h = tokens.view(B, P, N, -1)
        slot, day = self.encoder.calendar(x)
        spatial = self.encoder.spatial(x).to(h.dtype) if self.spatial_embedding == "laplacian" else None
        ste = self.embedding(slot, day, spatial, N)
        ste_past, ste_future = ste[:, :P], ste[:, P:]
        hidden: list[torch.Tensor] = []
        for block in self.encoder_blocks:
            h = block(h, ste_past)
            hidden.append(h.flatten(1, 2))
        h = self.transform(h, ste_past, ste_future)
        for block in self.decoder_blocks:
            h = block(h, ste_future)
        out = self.encoder.postprocess(self.head(h)[..., 0])
        return (out, hidden) if return_hidden else out

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part: input FC, embedding, encoder blocks, transform attention, decoder blocks, output FC."""
        count = parameter_counter()
        report = {"encoder": count(self.encoder), "embedding": count(self.embedding),
                  "encoder blocks": count(self.encoder_blocks), "transform attention": count(self.transform),
                  "decoder blocks": count(self.decoder_blocks), "head": count(self.head)}
        report["total"] = sum(p.numel() for p in self.parameters())
        return report
