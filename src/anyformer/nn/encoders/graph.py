"""Graphs as padded tensors -> one token per node, with an optional structural encoding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from anyformer.errors import ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.registry import register

# Eigenvalues of a normalised Laplacian lie in [0, 2]: a padded node's diagonal above that
# sorts its (one-hot) eigenvector after every real one.
PADDED_EIGENVALUE = 3.0


@dataclass
class GraphEdges:
    """Directed edges of a batch, both directions of every undirected edge given: `source`
    and `target` node positions [B, E], `valid` Bool[B, E] (False: padding, whose positions
    are 0), `features` [B, E, Fe] or None."""

    source: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    features: torch.Tensor | None


def dense_adjacency(edges: GraphEdges, num_nodes: int, dtype: torch.dtype) -> torch.Tensor:
    """0/1 adjacency [B, N, N] of the valid edges (a repeated edge counts once)."""
    B = edges.source.shape[0]
    adj = torch.zeros(B, num_nodes, num_nodes, dtype=dtype, device=edges.source.device)
    batch = torch.arange(B, device=adj.device)[:, None].expand_as(edges.source)
    adj.index_put_((batch, edges.target, edges.source), edges.valid.to(dtype), accumulate=True)
    return adj.clamp_(max=1.0)


def random_walk_encoding(adj: torch.Tensor, steps: int) -> torch.Tensor:
    """RWPE (Dwivedi et al. 2022): node i's landing probabilities [RW^k]_ii for k = 1..steps
    of the random walk RW = A D^-1 -> [B, N, steps]; an isolated node's are 0."""
    walk = adj / adj.sum(-2, keepdim=True).clamp_min(1.0)
    power, out = walk, []
    for _ in range(steps):
        out.append(power.diagonal(dim1=-2, dim2=-1))
        power = power @ walk
    return torch.stack(out, -1)


def laplacian_encoding(adj: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """Laplacian eigenvector PE (Dwivedi & Bresson 2020): the eigenvectors of the 2nd..(size+1)th
    smallest eigenvalues of I - D^-1/2 A D^-1/2 over the real nodes -> [B, N, size]; a graph
    with fewer nodes gets zeros in the columns it lacks."""
    deg = adj.sum(-1)
    scale = deg.clamp_min(1.0).rsqrt()
    lap = torch.diag_embed(torch.ones_like(deg)) - scale[..., :, None] * adj * scale[..., None, :]
    pad = torch.diag_embed((~mask).to(adj.dtype) * (PADDED_EIGENVALUE - 1.0))
    # float64: eigh of nearly repeated eigenvalues in float32 is noisy on the GPU.
    _, vectors = torch.linalg.eigh((lap + pad).double())
    vectors = vectors[..., 1:size + 1].to(adj.dtype) * mask[..., None].to(adj.dtype)
    if vectors.shape[-1] < size:
        vectors = torch.nn.functional.pad(vectors, (0, size - vectors.shape[-1]))
    return vectors


@register("encoder", "graph")
class GraphEncoder(Encoder):
    """Graph nodes -> tokens (Dwivedi et al. 2022 for the structural encodings). Input: a dict
    {"nodes": [B, N, F] float, "edges": [B, E, 2] long pairs of node positions (undirected; a
    pair of -1 pads), optional "edge_features": [B, E, Fe] float}; mask Bool[B, N] marks the
    real nodes -> tokens [B, N, D] = W x_i (+ W' pe_i), and the mask. `pe`: 'none',
    'random-walk' (RWPE, `pe_size` steps) or 'laplacian' (`pe_size` eigenvectors, each sign
    flipped at random in training, as the eigenvectors have no sign). Message-passing archs
    read the edges through `edges()`; attention over the nodes sees the graph only through pe."""

    paper = "Graph Neural Networks with Learnable Structural and Positional Representations (Dwivedi et al. 2022)"
    modality = "graph"
    may_pad = True
    example_options = {"node_features": 3, "edge_features": 2, "pe": "random-walk", "pe_size": 4}

    def __init__(self, dim: int, max_len: Count = 64, node_features: Count = 1, edge_features: NonNegativeInt = 0,
                 pe: Literal["none", "random-walk", "laplacian"] = "none", pe_size: Count = 8) -> None:
        super().__init__()
        self.num_tokens, self.node_features, self.edge_features = max_len, node_features, edge_features
        self.pe, self.pe_size = pe, pe_size
        self.node_proj = nn.Linear(node_features, dim)
        self.pe_proj = nn.Linear(pe_size, dim) if pe != "none" else None

    def _nodes(self, x: Any) -> torch.Tensor:
        if not isinstance(x, dict) or "nodes" not in x or "edges" not in x:
            raise ShapeError("encoder 'graph' expects a dict {'nodes': [B, N, F], 'edges': [B, E, 2]}; "
                             f"got {type(x).__name__}")
        nodes = x["nodes"]
        expect(nodes, 3, "encoder 'graph' nodes [batch, nodes, features]", floating=True)
        if nodes.shape[-1] != self.node_features:
            raise ShapeError(f"encoder 'graph' expects {self.node_features} node features, got {nodes.shape[-1]}")
        if nodes.shape[1] > self.num_tokens:
            raise ShapeError(f"encoder 'graph': {nodes.shape[1]} nodes exceed max_len {self.num_tokens}; raise model.max_len")
        return nodes

    def edges(self, x: Any, mask: torch.Tensor | None = None) -> GraphEdges:
        """Both directions of the input's edges, checked against the node count; with the
        node mask, an edge that touches a padded node is padding too (no message reaches a
        real node from a padded one)."""
        nodes = self._nodes(x)
        pairs = x["edges"]
        expect(pairs, 3, "encoder 'graph' edges [batch, edges, 2]", floating=False)
        if pairs.shape[-1] != 2 or pairs.shape[0] != nodes.shape[0]:
            raise ShapeError(f"encoder 'graph' edges must be [batch, edges, 2] for {nodes.shape[0]} graphs, got {list(pairs.shape)}")
        valid = (pairs >= 0).all(-1)
        if not torch.compiler.is_compiling() and bool((pairs >= nodes.shape[1]).any() | (pairs < -1).any()):
            raise ShapeError(f"encoder 'graph': an edge names a node outside 0..{nodes.shape[1] - 1}")
        pairs = pairs.clamp_min(0)
        if mask is not None:
            real = torch.gather(mask, 1, pairs[..., 0]) & torch.gather(mask, 1, pairs[..., 1])
            valid = valid & real
        feats = x.get("edge_features")
        if self.edge_features:
            if feats is None:
                raise ShapeError(f"encoder 'graph' expects {self.edge_features} edge features, got none")
            expect(feats, 3, "encoder 'graph' edge_features [batch, edges, features]", floating=True)
            if feats.shape[:2] != pairs.shape[:2] or feats.shape[-1] != self.edge_features:
                raise ShapeError(f"encoder 'graph' expects edge_features {list(pairs.shape[:2]) + [self.edge_features]}, "
                                 f"got {list(feats.shape)}")
            # A dict input is not cast with the model (.double()): follow the weights' dtype.
            feats = torch.cat([feats, feats], 1).to(self.node_proj.weight.dtype)
        else:
            feats = None
        return GraphEdges(torch.cat([pairs[..., 0], pairs[..., 1]], 1), torch.cat([pairs[..., 1], pairs[..., 0]], 1),
                          torch.cat([valid, valid], 1), feats)

    def structural_encoding(self, x: Any, mask: torch.Tensor) -> torch.Tensor:
        """The configured pe [B, N, pe_size] (no gradient: it is a function of the graph)."""
        nodes = self._nodes(x)
        with torch.no_grad():
            adj = dense_adjacency(self.edges(x, mask), nodes.shape[1], self.node_proj.weight.dtype)
            if self.pe == "random-walk":
                return random_walk_encoding(adj, self.pe_size)
            vectors = laplacian_encoding(adj, mask, self.pe_size)
            if self.training:
                signs = torch.randint(0, 2, (vectors.shape[0], 1, self.pe_size), device=vectors.device) * 2 - 1
                vectors = vectors * signs.to(vectors.dtype)
            return vectors

    def forward(self, x: Any, mask: torch.Tensor | None = None):
        nodes = self._nodes(x)
        if mask is None:
            mask = torch.ones(nodes.shape[:2], dtype=torch.bool, device=nodes.device)
        elif mask.shape != nodes.shape[:2]:
            raise ShapeError(f"encoder 'graph': node mask {list(mask.shape)} does not match nodes {list(nodes.shape[:2])}")
        # A dict input is not cast with the model (.double()): follow the weights' dtype.
        tokens = self.node_proj(nodes.to(self.node_proj.weight.dtype))
        if self.pe_proj is not None:
            tokens = tokens + self.pe_proj(self.structural_encoding(x, mask))
        return tokens * mask[..., None].to(tokens.dtype), mask

    def example_input(self, batch: int = 2) -> Any:
        """`batch` random trees of max_len nodes (node i hangs from one of the two before it)."""
        n = self.num_tokens
        parents = (torch.arange(1, n)[None, :] - torch.randint(1, 3, (batch, n - 1))).clamp_min(0)
        pairs = torch.stack([parents, torch.arange(1, n).expand(batch, -1)], -1)
        out = {"nodes": torch.randn(batch, n, self.node_features), "edges": pairs}
        if self.edge_features:
            out["edge_features"] = torch.randn(batch, n - 1, self.edge_features)
        return out
