"""MPNN (GIN with edge features) over a graph's nodes, with an optional virtual node."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.encoders.graph import GraphEdges
from anyformer.nn.model import build_encoder, build_head, norm_fn, read_out, refuse_mixer, refuse_schedule, require_parts
from anyformer.nn.stack import parameter_counter
from anyformer.registry import register


def _ffn(config: ModelConfig, num_tokens: int) -> nn.Module:
    return registry.build("ffn", config.ffn.name, dim=config.dim, heads=config.heads, num_tokens=num_tokens,
                          grid=None, **config.ffn.options)


class GINELayer(nn.Module):
    """One GINE layer (Xu et al. 2019; edge features as in Hu et al. 2020), pre-norm residual:
    h_i + ffn((1 + eps) n_i + sum_{j -> i} relu(n_j + W e_ji)), n = norm(h). tokens [B, N, D],
    mask Bool[B, N], edges of the batch -> [B, N, D]."""

    def __init__(self, config: ModelConfig, num_tokens: int, edge_features: int, role: str) -> None:
        super().__init__()
        self.norm = norm_fn(config)(role)
        self.edge_proj = nn.Linear(edge_features, config.dim) if edge_features else None
        self.eps = nn.Parameter(torch.zeros(()))
        self.ffn = _ffn(config, num_tokens)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, edges: GraphEdges) -> torch.Tensor:
        B, N, D = h.shape
        n = self.norm(h, mask)
        flat = n.reshape(B * N, D)
        # Node j of graph b is row b * N + j of the flattened batch.
        offset = (torch.arange(B, device=h.device) * N)[:, None]
        message = flat[(edges.source + offset).reshape(-1)].view(B, -1, D)
        if self.edge_proj is not None:
            message = message + self.edge_proj(edges.features.to(self.edge_proj.weight.dtype))
        # A padded edge's slot points at node 0: its message is zeroed, not summed.
        message = (torch.relu(message) * edges.valid[..., None].to(message.dtype)).to(flat.dtype)
        summed = torch.zeros_like(flat).index_add_(0, (edges.target + offset).reshape(-1), message.reshape(-1, D))
        update = self.ffn((1 + self.eps) * n + summed.view(B, N, D))
        return (h + self.drop(update)) * mask[..., None].to(h.dtype)


class VirtualNode(nn.Module):
    """The virtual node's update (Gilmer et al. 2017; Cai et al. 2023, MPNN + VN): the sum
    (or mean) of the real nodes [B, N, D] plus the virtual node [B, D], normed, through an
    MLP, added to the virtual node -> [B, D]."""

    def __init__(self, config: ModelConfig, pool: str, role: str) -> None:
        super().__init__()
        self.pool = pool
        self.norm = norm_fn(config)(role)
        self.ffn = _ffn(config, 1)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, vn: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask[..., None].to(h.dtype)
        pooled = (h * w).sum(1)
        if self.pool == "mean":
            pooled = pooled / w.sum(1).clamp_min(1.0)
        x = (pooled + vn)[:, None]
        return vn + self.drop(self.ffn(self.norm(x, None)))[:, 0]


@register("arch", "mpnn")
class MessagePassingNetwork(nn.Module):
    """MPNN + VN (Cai et al. 2023), as OGB's GIN-virtual (GNN_node_Virtualnode): the `graph`
    encoder's node tokens [B, N, D] pass model.depth GINE layers (model.ffn is each layer's
    MLP, model.norm its norm). With `virtual_node`, layer l reads h_i + vn_l at every real node
    i, and vn_{l+1} = vn_l + MLP(pool_i(h_i + vn_l) + vn_l) is made from the same layer-l states
    (the paper's update: node and virtual node both read layer l), for every layer but the
    last; vn_0 = 0. That is O(N) work a layer besides the message passing's O(E), where
    attention over the nodes is O(N^2). Without it, a plain MPNN: a node's output depends only
    on nodes within `depth` hops. Final norm and head (a pooled head) read the nodes.
    forward(x, mask=None, return_hidden=False) -> output (and each layer's nodes [B, N, D])."""

    paper = "On the Connection Between MPNN and Graph Transformer (Cai et al. 2023); GIN (Xu et al. 2019)"
    supports_token_filter = False
    builds_own_mixer = True  # model.mixer does not apply; refuse_mixer says so
    example_config = {"dim": 32, "heads": 4, "depth": 2, "dropout": 0.0, "position": "none", "max_len": 8,
                      "ffn": {"name": "mlp", "ratio": 2}, "arch": {"name": "mpnn"},
                      "encoder": {"name": "graph", "node_features": 3, "edge_features": 2},
                      "head": {"name": "mean", "num_classes": 3}}

    def __init__(self, config: ModelConfig, virtual_node: bool = True, virtual_pool: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        self.config = c = config
        require_parts(c)
        refuse_mixer(c, "mpnn")
        if c.causal:
            raise ConfigError("arch 'mpnn' reads a graph, which has no order to be causal in; set model.causal: false")
        refuse_schedule(c, "mpnn")
        if c.position.name != "none":
            raise ConfigError(f"arch 'mpnn': node order carries no meaning, so position {c.position.name!r} cannot apply; "
                              "set model.position: none (the encoder's pe option encodes structure)")
        self.encoder = build_encoder(c)
        if getattr(self.encoder, "modality", None) != "graph":
            raise ConfigError(f"arch 'mpnn' passes messages along edges: use encoder 'graph', not {c.encoder.name!r}")
        N = self.encoder.num_tokens
        self.virtual_node = virtual_node
        self.layers = nn.ModuleList(GINELayer(c, N, self.encoder.edge_features, f"layer{i}.norm") for i in range(c.depth))
        if virtual_node:
            # Zero at start, as OGB's virtual-node embedding: the first layer is a plain MPNN's.
            self.virtual_init = nn.Parameter(torch.zeros(c.dim))
            self.virtual_updates = nn.ModuleList(VirtualNode(c, virtual_pool, f"virtual{i}.norm") for i in range(c.depth - 1))
        self.final_norm = norm_fn(c)("final") if c.final_norm else None
        self.head = build_head(c, self.encoder, N)

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def reaches_every_token(self) -> bool:
        """Whether every node's output depends on every node: only through a virtual node
        (and depth >= 2); a plain MPNN's nodes see `depth` hops."""
        return self.virtual_node and self.config.depth >= 2

    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        h, mask = self.encoder(x, mask)
        edges = self.encoder.edges(x, mask)
        real = mask[..., None].to(h.dtype)
        # A sum, not expand(): an expanded view of a parameter made under no_grad claims to need
        # a gradient yet has no grad_fn, which FLOP counting's module hooks (bench) cannot take.
        vn = torch.zeros_like(h[:, 0]) + self.virtual_init.to(h.dtype) if self.virtual_node else None
        hidden: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if vn is not None:
                h = h + vn[:, None] * real
                if i < len(self.layers) - 1:
                    # From the layer's input, as OGB: the next virtual node reads what this layer reads.
                    vn = self.virtual_updates[i](vn, h, mask)
            h = layer(h, mask, edges)
            hidden.append(h)
        return read_out(self, h, mask, hidden, return_hidden)

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part: encoder, message passing, virtual node, final norm, head."""
        count = parameter_counter()
        report = {"encoder": count(self.encoder), "message passing": count(self.layers)}
        report["virtual node"] = (count(self.virtual_updates) + self.virtual_init.numel()) if self.virtual_node else 0
        report["final norm"] = count(self.final_norm)
        report["head"] = count(self.head)
        report["total"] = sum(p.numel() for p in self.parameters())
        return report

