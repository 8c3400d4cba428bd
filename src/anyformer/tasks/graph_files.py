"""Graph files: JSON lines (one graph an object) and the TU Dortmund format (DS_A.txt, ...)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from anyformer.errors import DataError
from anyformer.tasks.files import text_lines
from anyformer.tasks.graph_data import GraphRecord
from anyformer.tasks.raw import jsonl_records


def _numbers(value: Any, where: str, what: str) -> list[float]:
    """A JSON number or list of numbers -> floats, or a DataError naming `what`."""
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(f"{where}: {what} holds {json.dumps(v)}, not a finite number; fix the value")
        out.append(float(v))
    return out


def _rows(value: Any, where: str, key: str, width: int | None) -> tuple[np.ndarray, int | None]:
    """A JSON list of feature rows (a number is a row of one) -> float32 [n, width]."""
    if not isinstance(value, list):
        raise DataError(f"{where}: {key!r} must be a list (one entry per {'node' if key == 'nodes' else 'edge'}), got {type(value).__name__}")
    rows = [_numbers(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    for i, r in enumerate(rows):
        if width is None:
            width = len(r)
        if len(r) != width:
            raise DataError(f"{where}: {key}[{i}] has {len(r)} features, earlier ones have {width}; "
                            "give every entry the same number of features")
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), width or 0), width


def _label(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int)):
        raise DataError(f"{where}: 'label' is {json.dumps(value)}; give a class as a string or an integer")
    return value


def read_jsonl(path: Path) -> list[GraphRecord]:
    """Graphs of a JSON-lines file: {"nodes": [[features], ...], "edges": [[u, v], ...]
    (0-based node positions, undirected), "edge_features": [[features], ...] (optional, one
    per edge), "label": class}. Blank lines are skipped; every graph must have the same
    node (and edge) feature count."""
    graphs: list[GraphRecord] = []
    width: int | None = None
    edge_width: int | None = None
    for row in jsonl_records(path):
        obj, where = row.value, row.where
        for key in ("nodes", "label"):
            if key not in obj:
                raise DataError(f"{where}: no key {key!r}; each line needs 'nodes' and 'label' ('edges' may be left out)")
        nodes, width = _rows(obj["nodes"], where, "nodes", width)
        if len(nodes) == 0:
            raise DataError(f"{where}: a graph with no nodes; give each graph at least one node")
        pairs = obj.get("edges", [])
        if not isinstance(pairs, list):
            raise DataError(f"{where}: 'edges' must be a list of [u, v] pairs, got {type(pairs).__name__}")
        edges = np.zeros((len(pairs), 2), dtype=np.int64)
        for i, pair in enumerate(pairs):
            if (not isinstance(pair, list) or len(pair) != 2
                    or any(isinstance(u, bool) or not isinstance(u, int) for u in pair)):
                raise DataError(f"{where}: edges[{i}] is {json.dumps(pair)}, not a pair of node positions [u, v]")
            bad = [u for u in pair if not 0 <= u < len(nodes)]
            if bad:
                raise DataError(f"{where}: edges[{i}] names node {bad[0]}, but the graph has nodes 0..{len(nodes) - 1}")
            edges[i] = pair
        feats = None
        given = "edge_features" in obj
        if graphs and given != (graphs[0].edge_features is not None):
            raise DataError(f"{where}: {'an' if given else 'no'} 'edge_features' key, which the first graph "
                            f"{'lacks' if given else 'has'}; give edge features on every line or on none")
        if given:
            feats, edge_width = _rows(obj["edge_features"], where, "edge_features", edge_width)
            if len(feats) != len(edges):
                raise DataError(f"{where}: {len(feats)} edge_features for {len(edges)} edges; give one per edge")
        graphs.append(GraphRecord(nodes, edges, feats, _label(obj["label"], where), where))
    if not graphs:
        raise DataError(f"{path}: no graphs; write one JSON object per line")
    return graphs


def tu_prefix(path: Path) -> tuple[Path, str]:
    """(folder, dataset name) of a TU dataset given as its folder or its DS_A.txt."""
    if path.is_file() and path.name.endswith("_A.txt"):
        return path.parent, path.name[:-len("_A.txt")]
    found = sorted(path.glob("*_A.txt")) if path.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DataError(f"{path}: {what} *_A.txt file{'s' if found else ''} in the folder; give the folder of one "
                        "TU dataset (DS_A.txt, DS_graph_indicator.txt, DS_graph_labels.txt) or its DS_A.txt")
    return path, found[0].name[:-len("_A.txt")]


def _tu_lines(path: Path, columns: int | None, integer: bool) -> list[tuple[int, list[float]]]:
    """(line, values) of a TU file of comma-separated numbers, one row a line; `columns`:
    the count every row must have (None: as the first row)."""
    rows: list[tuple[int, list[float]]] = []
    for line, text in text_lines(path, option=None):
        if not text.strip():
            continue
        fields = [f.strip() for f in text.split(",")]
        if columns is None:
            columns = len(fields)
        if len(fields) != columns:
            raise DataError(f"{path}:{line}: {len(fields)} values, {'the format needs' if integer else 'earlier lines have'} {columns}")
        values = []
        for f in fields:
            try:
                v = float(f)
            except ValueError:
                raise DataError(f"{path}:{line}: {f!r} is not a number") from None
            if not math.isfinite(v) or (integer and v != int(v)):
                raise DataError(f"{path}:{line}: {f!r} is not {'an integer' if integer else 'a finite number'}")
            values.append(v)
        rows.append((line, values))
    return rows


def _one_hot(codes: np.ndarray) -> np.ndarray:
    values, index = np.unique(codes, return_inverse=True)
    out = np.zeros((len(codes), len(values)), dtype=np.float32)
    out[np.arange(len(codes)), index] = 1.0
    return out


def _optional(folder: Path, name: str, kind: str, count: int, integer: bool, what: str) -> np.ndarray | None:
    """A per-node or per-edge TU file as float32 [count, k], one-hot for labels; None when absent."""
    path = folder / f"{name}_{kind}.txt"
    if not path.is_file():
        return None
    rows = _tu_lines(path, 1 if integer else None, integer)
    if len(rows) != count:
        raise DataError(f"{path}: {len(rows)} lines, one per {what} needs {count}")
    values = np.asarray([r for _, r in rows], dtype=np.float32)
    return _one_hot(values[:, 0]) if integer else values


def read_tu(path: Path) -> list[GraphRecord]:
    """Graphs of a TU Dortmund dataset (Morris et al. 2020): DS_A.txt (one 'u, v' edge a
    line, 1-based node ids), DS_graph_indicator.txt (line i: node i's graph, 1-based),
    DS_graph_labels.txt (line g: graph g's class), optional DS_node_labels.txt (one-hot
    node features), DS_node_attributes.txt, DS_edge_labels.txt and DS_edge_attributes.txt
    (per line of DS_A.txt). Node features are the one-hot labels and the attributes side by
    side (a constant 1 when there are neither); each undirected edge is kept once."""
    folder, name = tu_prefix(path)
    files = {k: folder / f"{name}_{k}.txt" for k in ("A", "graph_indicator", "graph_labels")}
    for k, f in files.items():
        if not f.is_file():
            raise DataError(f"{f}: missing; a TU dataset needs {name}_A.txt, {name}_graph_indicator.txt and {name}_graph_labels.txt")
    indicator_rows = _tu_lines(files["graph_indicator"], 1, True)
    label_rows = _tu_lines(files["graph_labels"], 1, True)
    if not indicator_rows:
        raise DataError(f"{files['graph_indicator']}: no nodes; it needs one line (the node's graph id) per node")
    graph_of = np.asarray([int(v[0]) for _, v in indicator_rows], dtype=np.int64)
    bad = np.flatnonzero((graph_of < 1) | (graph_of > len(label_rows)))
    if len(bad):
        raise DataError(f"{files['graph_indicator']}:{indicator_rows[bad[0]][0]}: graph {graph_of[bad[0]]}, but "
                        f"{files['graph_labels'].name} labels graphs 1..{len(label_rows)}")
    if np.any(np.diff(graph_of) < 0):
        k = int(np.flatnonzero(np.diff(graph_of) < 0)[0]) + 1
        raise DataError(f"{files['graph_indicator']}:{indicator_rows[k][0]}: graph ids must not decrease (each graph's nodes in one run)")
    counts = np.bincount(graph_of, minlength=len(label_rows) + 1)[1:]
    if (counts == 0).any():
        g = int(np.flatnonzero(counts == 0)[0]) + 1
        raise DataError(f"{files['graph_labels']}:{label_rows[g - 1][0]}: graph {g} has no node in {files['graph_indicator'].name}")
    edge_rows = _tu_lines(files["A"], 2, True)
    n_nodes = len(graph_of)
    pairs = np.asarray([v for _, v in edge_rows], dtype=np.int64).reshape(-1, 2)
    for k in range(len(pairs)):
        u, v = pairs[k]
        if not (1 <= u <= n_nodes and 1 <= v <= n_nodes):
            raise DataError(f"{files['A']}:{edge_rows[k][0]}: node {u if not 1 <= u <= n_nodes else v} does not exist "
                            f"({files['graph_indicator'].name} has nodes 1..{n_nodes})")
        if graph_of[u - 1] != graph_of[v - 1]:
            raise DataError(f"{files['A']}:{edge_rows[k][0]}: an edge between graphs {graph_of[u - 1]} and {graph_of[v - 1]}")
    node_parts = [p for p in (_optional(folder, name, "node_labels", n_nodes, True, "node"),
                              _optional(folder, name, "node_attributes", n_nodes, False, "node")) if p is not None]
    node_x = np.concatenate(node_parts, 1) if node_parts else np.ones((n_nodes, 1), dtype=np.float32)
    edge_parts = [p for p in (_optional(folder, name, "edge_labels", len(pairs), True, "edge of the A file"),
                              _optional(folder, name, "edge_attributes", len(pairs), False, "edge of the A file")) if p is not None]
    edge_x = np.concatenate(edge_parts, 1) if edge_parts else None
    starts = np.concatenate([[0], np.cumsum(counts)])
    key = np.minimum(pairs[:, 0], pairs[:, 1]) * (n_nodes + 1) + np.maximum(pairs[:, 0], pairs[:, 1])
    _, first = np.unique(key, return_index=True)  # each undirected edge once, where first listed
    first = np.sort(first)
    edge_graph = graph_of[pairs[first, 0] - 1] - 1
    graphs = []
    for g, (line, label) in enumerate(label_rows):
        chosen = first[edge_graph == g]
        edges = pairs[chosen] - 1 - starts[g]
        feats = edge_x[chosen] if edge_x is not None else None
        graphs.append(GraphRecord(node_x[starts[g]:starts[g + 1]], edges, feats, int(label[0]),
                                  f"{files['graph_labels']}:{line}"))
    return graphs
