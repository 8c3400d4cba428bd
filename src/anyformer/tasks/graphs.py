"""Graph classification: a generated set (long-range retrieval or above-mean), or the user's graph file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.graph_data import GraphRecord, above_mean_graphs, padded, retrieval_graphs
from anyformer.tasks.graph_files import read_jsonl, read_tu
from anyformer.tasks.splits import stratified_split

SPLITS = ("train", "val", "test")


def _class_order(label: Any) -> tuple:
    return (0, label, "") if isinstance(label, int) else (1, 0, str(label))


@register("task", "graphs")
class GraphsTask(Task):
    """Classify whole graphs. With no `path`: generated long-range retrieval (seeded): in a
    thin random tree the root holds a query key, exactly one node at least `min_distance`
    hops away holds the same key, and the class is that node's value (graph_data.py); a
    plain MPNN of fewer than min_distance / 2 layers cannot relate the two, a virtual node
    or attention over all nodes can. With `target: above-mean` instead: the same thin trees,
    every node holding one value (two connected regions a random step apart, under a
    random offset), and the class is the bucket (`classes` near-equal ones) of the share of
    nodes whose value is above the graph's mean: it needs the global mean at every node,
    one step of a virtual node or of uniform attention, which a few-hop neighbourhood
    does not see (graph_data.above_mean_graphs). With `path`: a JSON-lines file (one graph
    a line, {"nodes", "edges", "edge_features"?, "label"}) or a TU Dortmund dataset (its
    folder or DS_A.txt), split into stratified seeded fractions. Inputs: {'nodes', 'edges',
    'edge_features'?} padded to the most nodes and edges of any graph, with the node mask
    (encoder 'graph')."""

    problem = "classification"
    modality = "graph"
    paper = "On the Connection Between MPNN and Graph Transformer (Cai et al. 2023); TUDataset (Morris et al. 2020)"
    argument_option = "path"
    file_options = ("path",)
    example_options = {"num_train": 24, "num_val": 8, "num_test": 8, "min_nodes": 8, "max_nodes": 10, "keys": 3,
                       "classes": 2, "min_distance": 4}

    def __init__(
        self,
        path: Annotated[str | None, Field(description="a .jsonl file of graphs or a TU dataset folder (or its DS_A.txt); none: generated")] = None,
        target: Annotated[Literal["retrieval", "above-mean"], Field(description="the generated task: retrieval (the far node matching the root's key; its value is the class) or above-mean (the bucket of the share of nodes above the graph's mean value)")] = "retrieval",
        num_train: Annotated[int, Field(ge=1, description="generated training graphs")] = 3000,
        num_val: Annotated[int, Field(ge=1, description="generated val graphs")] = 500,
        num_test: Annotated[int, Field(ge=1, description="generated test graphs")] = 500,
        min_nodes: Annotated[int, Field(ge=2, description="fewest nodes of a generated graph")] = 24,
        max_nodes: Annotated[int, Field(ge=2, description="most nodes of a generated graph")] = 32,
        keys: Annotated[int, Field(ge=2, description="distinct keys of the generated nodes")] = 8,
        classes: Annotated[int, Field(ge=2, description="the generated classes: distinct node values (retrieval) or buckets of the share above the mean (above-mean)")] = 4,
        min_distance: Annotated[int, Field(ge=1, description="fewest hops between the query and its match (retrieval)")] = 10,
        branching: Annotated[float, Field(ge=0.0, le=1.0, description="chance a generated node hangs off 2-3 nodes back, not the previous one")] = 0.3,
        seed: Annotated[int, Field(description="seed of the generated graphs")] = 0,
        val_fraction: Annotated[float, Field(description="share of a file's graphs held out for val (stratified)")] = 0.1,
        test_fraction: Annotated[float, Field(description="share of a file's graphs held out for test (stratified)")] = 0.2,
        split_seed: Annotated[int, Field(description="seed of a file's stratified split")] = 0,
    ) -> None:
        super().__init__()
        if min_nodes > max_nodes:
            raise ConfigError(f"task 'graphs': min_nodes {min_nodes} exceeds max_nodes {max_nodes}")
        if target == "retrieval" and min_distance >= max_nodes:
            raise ConfigError(f"task 'graphs': min_distance {min_distance} needs more than {min_distance} nodes; raise max_nodes")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError("task 'graphs': val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        self.path, self.target = path, target
        self.counts = dict(zip(SPLITS, (num_train, num_val, num_test)))
        self.min_nodes, self.max_nodes, self.keys, self.num_values = min_nodes, max_nodes, keys, classes
        self.min_distance, self.branching, self.seed = min_distance, branching, seed
        self.fractions = [1 - val_fraction - test_fraction, val_fraction, test_fraction]
        self.split_seed = split_seed
        self.classes: list[str] = []
        self.node_features = self.edge_features = 0
        self.max_graph_nodes = 0

    def read(self) -> list[GraphRecord]:
        """The graphs of `path`: JSON lines for a .jsonl/.json file, else a TU dataset."""
        p = Path(str(self.path)).expanduser()
        if not p.exists():
            raise DataError(f"graph data {str(p)!r} does not exist; give a .jsonl file or a TU dataset folder")
        return read_jsonl(p) if p.is_file() and p.suffix in (".jsonl", ".json") else read_tu(p)

    def build_splits(self) -> dict[str, Split]:
        if self.path is None:
            total = sum(self.counts.values())
            if self.target == "above-mean":
                graphs = above_mean_graphs(total, self.min_nodes, self.max_nodes, self.num_values, self.branching,
                                           self.seed)
            else:
                graphs = retrieval_graphs(total, self.min_nodes, self.max_nodes, self.keys, self.num_values,
                                          self.min_distance, self.branching, self.seed)
            self.classes = [str(c) for c in range(self.num_values)]
            y = torch.tensor([int(g.label) for g in graphs], dtype=torch.long)
            cuts = torch.tensor([0] + [self.counts[s] for s in SPLITS]).cumsum(0).tolist()
            parts = [torch.arange(cuts[i], cuts[i + 1]) for i in range(3)]
        else:
            graphs = self.read()  # one node (and edge) feature count: the readers check it
            labels = sorted({g.label for g in graphs}, key=_class_order)
            names = [str(c) for c in labels]
            if len(set(names)) < len(names):
                twin = next(c for c in labels if isinstance(c, str) and names.count(c) > 1)
                raise DataError(f"{self.path}: label {twin!r} is given both as a string and as a number; "
                                "write every label one way")
            require_classes(labels, str(self.path), "the graphs' labels")
            index = {v: k for k, v in enumerate(labels)}
            self.classes = [str(c) for c in labels]
            y = torch.tensor([index[g.label] for g in graphs], dtype=torch.long)
            parts = stratified_split(y, self.fractions, self.split_seed)
            self._parts = dict(zip(SPLITS, parts))
        first = graphs[0]
        self.node_features = int(first.nodes.shape[1])
        self.edge_features = 0 if first.edge_features is None else int(first.edge_features.shape[1])
        if self.node_features == 0:
            raise DataError(f"{self.path}: the nodes have no features; give each node at least one number")
        self.max_graph_nodes = max(len(g.nodes) for g in graphs)
        inputs, mask = padded(graphs, self.edge_features)
        return {name: Split({k: v[idx] for k, v in inputs.items()}, y[idx], mask[idx]) for name, idx in zip(SPLITS, parts)}

    def model_defaults(self) -> dict[str, Any]:
        self.splits()
        return {"encoder": {"name": "graph", "node_features": self.node_features, "edge_features": self.edge_features},
                "head": {"name": "mean", "num_classes": len(self.classes)}, "max_len": self.max_graph_nodes}

    def required_options(self) -> dict[str, dict[str, Any]]:
        self.splits()
        return {"encoder": {"node_features": self.node_features, "edge_features": self.edge_features},
                "head": {"num_classes": len(self.classes), "multi_label": False}}

    def baseline_preset(self) -> str:
        return "graph-transformer"

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 1500, "batch_size": 64, "lr": 1e-3, "warmup_steps": 50, "eval_every": 250}

    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"classes": self.classes, "node_features": self.node_features, "edge_features": self.edge_features}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes = [str(c) for c in state["classes"]]
        self.node_features, self.edge_features = int(state["node_features"]), int(state["edge_features"])
