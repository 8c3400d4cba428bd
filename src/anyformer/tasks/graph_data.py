"""Graphs as records, padded into batch tensors, and the generated sets: long-range retrieval and above-mean."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from anyformer.errors import DataError


@dataclass
class GraphRecord:
    """One graph: node features [n, F], undirected edges [e, 2] (node positions 0..n-1),
    edge features [e, Fe] or None, its label, and where it was read (file:line, or None)."""

    nodes: np.ndarray
    edges: np.ndarray
    edge_features: np.ndarray | None
    label: object
    where: str | None = None


def padded(graphs: list[GraphRecord], edge_features: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({'nodes': float32 [G, N, F], 'edges': int64 [G, E, 2] (-1 pads), 'edge_features':
    float32 [G, E, Fe] when edge_features > 0}, node mask Bool[G, N]), N and E the most
    nodes and edges of any graph."""
    N = max(len(g.nodes) for g in graphs)
    E = max(max((len(g.edges) for g in graphs), default=0), 1)  # one padded slot keeps every shape non-empty
    F = graphs[0].nodes.shape[1]
    nodes = np.zeros((len(graphs), N, F), dtype=np.float32)
    edges = np.full((len(graphs), E, 2), -1, dtype=np.int64)
    feats = np.zeros((len(graphs), E, edge_features), dtype=np.float32) if edge_features else None
    mask = np.zeros((len(graphs), N), dtype=bool)
    for i, g in enumerate(graphs):
        n, e = len(g.nodes), len(g.edges)
        nodes[i, :n], mask[i, :n] = g.nodes, True
        edges[i, :e] = g.edges
        if feats is not None and e:
            feats[i, :e] = g.edge_features
    inputs = {"nodes": torch.from_numpy(nodes), "edges": torch.from_numpy(edges)}
    if feats is not None:
        inputs["edge_features"] = torch.from_numpy(feats)
    return inputs, torch.from_numpy(mask)


def chain_tree(rng: np.random.Generator, n: int, branching: float) -> np.ndarray:
    """Parent of each node 1..n-1 of a long, thin random tree: node i hangs from i - 1, or
    with probability `branching` from i - 2 or i - 3 (so the depth grows with n)."""
    step = 1 + (rng.random(n - 1) < branching) * rng.integers(1, 3, n - 1)
    return np.maximum(np.arange(1, n) - step, 0)


def tree_depths(parents: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parents) + 1, dtype=np.int64)
    for i, p in enumerate(parents, 1):  # a parent always precedes its child
        depth[i] = depth[p] + 1
    return depth


def retrieval_graphs(count: int, min_nodes: int, max_nodes: int, keys: int, classes: int,
                     min_distance: int, branching: float, seed: int) -> list[GraphRecord]:
    """`count` long-range retrieval graphs: a thin random tree whose root is the query node,
    holding a key; exactly one other node, at least `min_distance` hops from it, holds the
    same key, and the label is that node's value. Every other node has a random other key.
    The n - 1 nodes but the query hold values as evenly as n - 1 allows (each class
    (n - 1) // classes times, the remainder's classes drawn at random), so the graph's value
    counts say almost nothing of the label (a guess from them scores at most
    ceil((n - 1) / classes) / (n - 1)); drawn independently, the match's value made its
    class the most frequent often enough for a plain 4-layer MPNN to score 0.31 (chance
    0.25). Features [is_query, one-hot key (keys), one-hot value (classes)]; nodes are
    shuffled, so a node's position says nothing of its place in the tree. A node's
    neighbourhood of fewer than min_distance / 2 hops never holds both the query and its
    match."""
    rng = np.random.default_rng(seed)
    graphs: list[GraphRecord] = []
    width = 1 + keys + classes
    for _ in range(count):
        for _attempt in range(100):
            n = int(rng.integers(min_nodes, max_nodes + 1))
            parents = chain_tree(rng, n, branching)
            depth = tree_depths(parents)
            far = np.flatnonzero(depth >= min_distance)
            if len(far):
                break
        else:
            raise DataError(f"task 'graphs': no tree of {min_nodes}..{max_nodes} nodes reaches {min_distance} hops "
                            "from its root; raise min_nodes or lower min_distance")
        match = int(rng.choice(far))
        query_key = int(rng.integers(keys))
        others = rng.integers(keys - 1, size=n)
        node_keys = others + (others >= query_key)  # every key but the query's
        node_keys[0] = node_keys[match] = query_key
        counts = np.full(classes, (n - 1) // classes)
        counts[rng.choice(classes, (n - 1) % classes, replace=False)] += 1
        values = np.concatenate([[0], rng.permutation(np.repeat(np.arange(classes), counts))])  # node 0: no value
        x = np.zeros((n, width), dtype=np.float32)
        x[0, 0] = 1.0
        x[np.arange(n), 1 + node_keys] = 1.0
        x[np.arange(1, n), 1 + keys + values[1:]] = 1.0
        order = rng.permutation(n)  # order[k]: the tree node placed at position k
        where = np.empty(n, dtype=np.int64)
        where[order] = np.arange(n)
        edges = np.stack([where[parents], where[np.arange(1, n)]], 1)
        graphs.append(GraphRecord(x[order], edges, None, int(values[match])))
    return graphs


def above_mean_score(values: np.ndarray) -> float:
    """The share of the `values` [n] above their mean, plus a tie-break under any step
    between shares (1e-6 times the mean of max(0, v_i - mean), over the values' spread):
    without it, shares such as 1/2 recur in so many graphs that no cut between the classes
    could split them near evenly."""
    above = values - values.mean()
    return float((above > 0).mean() + 1e-6 * np.maximum(above, 0).mean() / max(float(values.std()), 1e-12))


def region_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n] values of one graph of `chain_tree`'s n nodes: tree nodes 0..k-1, a connected
    region (a parent precedes its child), hold c + d + noise, the others c + noise; the
    offset c ~ N(0, 3^2), the step d = +-(2..4) and the region's share k / n (uniform
    0.1..0.9) are drawn per graph, the noise N(0, 0.25^2) per node (small beside d, or the
    larger region would sit about its own mean and every share come out near 1/2). A node inside either part
    sees neighbours like itself: whether it lies above the graph's mean depends on c, d
    and k, which only the whole graph shows."""
    k = int(np.clip(round(rng.uniform(0.1, 0.9) * n), 1, n - 1))
    step = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0)
    return rng.normal(0.0, 3.0) + step * (np.arange(n) < k) + 0.25 * rng.standard_normal(n)


def above_mean_thresholds(min_nodes: int, max_nodes: int, classes: int, samples: int = 20000) -> np.ndarray:
    """The classes - 1 cut points between the classes of `above_mean_graphs`: quantiles of
    `above_mean_score` over `samples` graphs drawn from a fixed generator (not the task's
    seed), so a graph's class depends on the graph alone and the classes come out near
    equal in size."""
    rng = np.random.default_rng(20230101)
    shares = [above_mean_score(region_values(rng, int(rng.integers(min_nodes, max_nodes + 1)))) for _ in range(samples)]
    return np.quantile(shares, np.arange(1, classes) / classes)


def above_mean_graphs(count: int, min_nodes: int, max_nodes: int, classes: int, branching: float,
                      seed: int) -> list[GraphRecord]:
    """`count` graphs whose class needs the global mean at every node: a thin random tree
    (as `retrieval_graphs`', nodes shuffled) whose nodes each hold one value
    (`region_values`: two connected regions a random step apart, under a random offset);
    the class is the bucket of the share of nodes whose value is above the graph's mean,
    cut at `above_mean_thresholds` (near-equal classes). One mean over all nodes,
    broadcast back (a virtual node's or uniform attention's one step), a per-node
    comparison and the mean readout compute it; a node's few-hop neighbourhood in a thin
    tree sees only its own region. Features: [value]."""
    rng = np.random.default_rng(seed)
    cuts = above_mean_thresholds(min_nodes, max_nodes, classes)
    graphs: list[GraphRecord] = []
    for _ in range(count):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        parents = chain_tree(rng, n, branching)
        x = region_values(rng, n)
        label = int(np.searchsorted(cuts, above_mean_score(x), side="right"))
        order = rng.permutation(n)
        where = np.empty(n, dtype=np.int64)
        where[order] = np.arange(n)
        edges = np.stack([where[parents], where[np.arange(1, n)]], 1)
        graphs.append(GraphRecord(x[order, None].astype(np.float32), edges, None, label))
    return graphs
