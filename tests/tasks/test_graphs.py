"""The graphs task: the planted structure of the generated long-range retrieval graphs, seeded
data, the stratified split of a file, the JSON-lines and TU Dortmund readers read back value
by value, malformed files refused in one line naming the file and line, and the contract."""
from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError, DataError
from anyformer.tasks.graph_data import above_mean_graphs, above_mean_thresholds, padded, retrieval_graphs

from .helpers import check_model_fits

KEYS, CLASSES = 4, 3


def hops(n: int, edges: np.ndarray, start: int) -> np.ndarray:
    """Breadth-first hop counts from `start` (-1: unreachable)."""
    adj = [[] for _ in range(n)]
    for u, v in edges:
        adj[u].append(v)
        adj[v].append(u)
    dist = np.full(n, -1)
    dist[start] = 0
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def test_generated_graphs_hold_one_far_match_whose_value_is_the_label():
    graphs = retrieval_graphs(60, 12, 16, KEYS, CLASSES, min_distance=6, branching=0.3, seed=1)
    labels = []
    for g in graphs:
        n = len(g.nodes)
        assert 12 <= n <= 16 and len(g.edges) == n - 1  # a tree
        assert g.nodes.shape[1] == 1 + KEYS + CLASSES and g.edge_features is None
        query = np.flatnonzero(g.nodes[:, 0] == 1)
        assert len(query) == 1
        q = int(query[0])
        keys = g.nodes[:, 1:1 + KEYS].argmax(1)
        assert (g.nodes[:, 1:1 + KEYS].sum(1) == 1).all()  # one key per node
        dist = hops(n, g.edges, q)
        assert (dist >= 0).all()  # connected
        same = [i for i in range(n) if i != q and keys[i] == keys[q]]
        assert len(same) == 1
        match = same[0]
        assert dist[match] >= 6
        values = g.nodes[:, 1 + KEYS:]
        assert values[q].sum() == 0 and (values[np.arange(n) != q].sum(1) == 1).all()
        assert g.label == int(values[match].argmax())
        # Values as even as n - 1 allows: the counts barely hint at the label.
        counts = values.sum(0)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n - 1
        labels.append(g.label)
    assert set(labels) == set(range(CLASSES))
    # The query is not at a fixed position: the nodes are shuffled.
    assert len({int(np.flatnonzero(g.nodes[:, 0])[0]) for g in graphs}) > 3


def test_generated_graphs_are_seeded():
    a, b, c = (retrieval_graphs(5, 10, 12, KEYS, CLASSES, 5, 0.3, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x.nodes, y.nodes) and np.array_equal(x.edges, y.edges) and x.label == y.label
               for x, y in zip(a, b))
    assert not all(np.array_equal(x.edges, y.edges) for x, y in zip(a, c))


def test_an_unreachable_distance_is_a_data_error():
    # A tree of 4 nodes is at most 3 hops deep.
    with pytest.raises(DataError, match="no tree of 4..4 nodes reaches 5 hops"):
        retrieval_graphs(1, 4, 4, KEYS, CLASSES, min_distance=5, branching=0.0, seed=0)


def test_padding_marks_real_nodes_and_pads_edges_with_minus_one():
    graphs = retrieval_graphs(3, 5, 8, KEYS, CLASSES, 3, 0.3, seed=0)
    inputs, mask = padded(graphs, 0)
    sizes = [len(g.nodes) for g in graphs]
    assert inputs["nodes"].shape == (3, max(sizes), 1 + KEYS + CLASSES) and "edge_features" not in inputs
    assert mask.sum(1).tolist() == sizes
    for i, g in enumerate(graphs):
        assert np.array_equal(inputs["edges"][i, :len(g.edges)].numpy(), g.edges)
        assert (inputs["edges"][i, len(g.edges):] == -1).all()
        assert inputs["nodes"][i, sizes[i]:].abs().sum() == 0


def test_the_generated_task_splits_by_count_and_fits_the_graph_encoder():
    opts = registry.get("task", "graphs").example_options
    task = registry.build("task", "graphs", **opts)
    splits = task.splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert task.classes == ["0", "1"] and task.node_features == 1 + 3 + 2 and task.edge_features == 0
    defaults = task.model_defaults()
    assert defaults["encoder"] == {"name": "graph", "node_features": 6, "edge_features": 0}
    assert defaults["max_len"] == int(splits["train"].mask.shape[1]) <= 10
    # The same options give the same data.
    again = registry.build("task", "graphs", **opts).splits()
    assert torch.equal(again["test"].inputs["edges"], splits["test"].inputs["edges"])
    assert torch.equal(again["test"].target, splits["test"].target)
    for preset in ("mpnn", "mpnn-vn", "graph-transformer"):
        check_model_fits(task, preset)


def test_above_mean_labels_are_the_bucket_of_the_share_above_the_mean():
    graphs = above_mean_graphs(80, 12, 16, 4, 0.3, seed=2)
    cuts = above_mean_thresholds(12, 16, 4)
    assert len(cuts) == 3 and (np.diff(cuts) > 0.05).all()
    exact = 0
    for g in graphs:
        n = len(g.nodes)
        assert 12 <= n <= 16 and g.nodes.shape == (n, 1) and g.edge_features is None
        assert len(g.edges) == n - 1 and (hops(n, g.edges, 0) >= 0).all()  # a tree
        # By hand: the mean, then the share of the nodes above it.
        v = [float(x) for x in g.nodes[:, 0]]
        mean = sum(v) / n
        share = sum(x > mean for x in v) / n
        # The class counts the cuts below the share; a share on a cut (within the 1e-6
        # tie-break) may fall on either side of it.
        below = sum(share > c + 1e-5 for c in cuts)
        on = sum(abs(share - c) <= 1e-5 for c in cuts)
        assert below <= g.label <= below + on
        exact += on == 0
    assert exact > 40 and {g.label for g in graphs} == {0, 1, 2, 3}


def test_above_mean_values_form_two_levels_in_few_connected_pieces():
    # Each graph's values form two levels a step of 2..4 apart: the region of the tree's
    # first k nodes is connected, the rest at most 3 pieces (a node hangs 1..3 back).
    for g in above_mean_graphs(20, 12, 16, 4, 0.3, seed=5):
        v = g.nodes[:, 0]
        high = v > (v.max() + v.min()) / 2
        assert 0 < high.sum() < len(v) and v[high].min() - v[~high].max() > 0.5
        pieces = sorted(int(part.sum()) - sum(1 for a, b in g.edges if part[a] and part[b]) for part in (high, ~high))
        assert pieces[0] == 1 and pieces[1] <= 3


def test_above_mean_graphs_are_seeded_and_balanced():
    a, b, c = (above_mean_graphs(5, 10, 12, 4, 0.3, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x.nodes, y.nodes) and np.array_equal(x.edges, y.edges) and x.label == y.label
               for x, y in zip(a, b))
    assert not all(np.array_equal(x.nodes, y.nodes) for x, y in zip(a, c))
    labels = np.array([g.label for g in above_mean_graphs(2000, 24, 32, 4, 0.3, seed=0)])
    shares = np.bincount(labels, minlength=4) / len(labels)
    assert (np.abs(shares - 0.25) < 0.03).all(), shares


def test_the_above_mean_task_fits_the_graph_encoder():
    options = {"target": "above-mean", "num_train": 24, "num_val": 8, "num_test": 8, "min_nodes": 8, "max_nodes": 10}
    task = registry.build("task", "graphs", **options, min_distance=50)  # min_distance: retrieval's only
    splits = task.splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert task.classes == ["0", "1", "2", "3"] and task.node_features == 1 and task.edge_features == 0
    again = registry.build("task", "graphs", **options).splits()
    assert torch.equal(again["test"].inputs["nodes"], splits["test"].inputs["nodes"])
    assert torch.equal(again["test"].target, splits["test"].target)
    for preset in ("mpnn", "mpnn-vn", "graph-transformer"):
        check_model_fits(task, preset)


@pytest.mark.parametrize("options, match", [
    ({"min_nodes": 12, "max_nodes": 10}, "min_nodes 12 exceeds max_nodes 10"),
    ({"min_nodes": 8, "min_distance": 10, "max_nodes": 10}, "min_distance 10 needs more than 10 nodes"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be in \\(0, 1\\) with a sum below 1"),
])
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        registry.build("task", "graphs", **options)


def _jsonl(tmp_path, graphs, name="g.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(g) + "\n" for g in graphs))
    return path


def _graph(i: int, label) -> dict:
    n = 2 + i % 3
    return {"nodes": [[float(i), float(k)] for k in range(n)], "edges": [[k, k + 1] for k in range(n - 1)],
            "edge_features": [[0.5 * k] for k in range(n - 1)], "label": label}


def test_a_jsonl_file_is_read_back_and_split_stratified(tmp_path):
    graphs = [_graph(i, "ab"[i % 2] if i < 40 else "c") for i in range(50)]
    path = _jsonl(tmp_path, graphs)
    task = registry.build("task", "graphs", path=str(path), val_fraction=0.2, test_fraction=0.2)
    splits = task.splits()
    assert task.classes == ["a", "b", "c"] and task.node_features == 2 and task.edge_features == 1
    # Stratified: every class is divided 60 / 20 / 20 (a: 20 graphs, b: 20, c: 10).
    counts = {s: torch.bincount(splits[s].target, minlength=3).tolist() for s in splits}
    assert counts == {"train": [12, 12, 6], "val": [4, 4, 2], "test": [4, 4, 2]}
    # Values read back: the split's positions name the file's graphs.
    where = task.split_indices()["test"]
    k = int(where[0])
    b = splits["test"].batch(torch.tensor([0]))
    g = graphs[k]
    n = len(g["nodes"])
    assert b.mask[0].sum() == n and b.target[0] == task.classes.index(g["label"])
    assert b.inputs["nodes"][0, :n].tolist() == g["nodes"]
    assert b.inputs["edges"][0, :n - 1].tolist() == g["edges"]
    assert b.inputs["edge_features"][0, :n - 1].tolist() == g["edge_features"]
    assert (b.inputs["edges"][0, n - 1:] == -1).all()
    # Another split seed, another split; the same seed, the same.
    other = registry.build("task", "graphs", path=str(path), val_fraction=0.2, test_fraction=0.2, split_seed=1)
    other.splits()
    assert not torch.equal(other.split_indices()["test"], where)
    check_model_fits(task, "mpnn-vn")


def test_integer_labels_sort_as_numbers(tmp_path):
    path = _jsonl(tmp_path, [_graph(i, [10, 2, 1][i % 3]) for i in range(30)])
    task = registry.build("task", "graphs", path=str(path))
    task.splits()
    assert task.classes == ["1", "2", "10"]


def _tu(folder, name="TOY", edges=None, indicator=None, labels=None, extra=None):
    """A TU dataset: graph 1 a triangle (nodes 1-3), graph 2 a pair (nodes 4-5), graph 3 a
    path of three (nodes 6-8); DS_A lists each edge in both directions, as TU files do."""
    folder.mkdir(exist_ok=True)
    edges = edges if edges is not None else ["1, 2", "2, 1", "2, 3", "3, 2", "3, 1", "1, 3", "4, 5", "5, 4",
                                             "6, 7", "7, 6", "7, 8", "8, 7"]
    files = {"A": edges, "graph_indicator": indicator or ["1", "1", "1", "2", "2", "3", "3", "3"],
             "graph_labels": labels or ["1", "-1", "1"], **(extra or {})}
    for kind, lines in files.items():
        (folder / f"{name}_{kind}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_a_tu_dataset_is_read_back(tmp_path):
    from anyformer.tasks.graph_files import read_tu
    folder = _tu(tmp_path / "toy", extra={
        "node_labels": ["0", "2", "0", "1", "1", "2", "0", "0"],
        "node_attributes": ["0.5", "1.5", "2.5", "3.5", "4.5", "5.5", "6.5", "7.5"],
        "edge_labels": ["1", "1", "0", "0", "1", "1", "0", "0", "1", "1", "0", "0"]})
    graphs = read_tu(folder)
    assert [g.label for g in graphs] == [1, -1, 1]
    assert [len(g.nodes) for g in graphs] == [3, 2, 3]
    # Each undirected edge once, where first listed, in the graph's own 0-based positions.
    assert graphs[0].edges.tolist() == [[0, 1], [1, 2], [2, 0]]
    assert graphs[1].edges.tolist() == [[0, 1]] and graphs[2].edges.tolist() == [[0, 1], [1, 2]]
    # Node features: one-hot of labels {0, 1, 2}, then the attribute.
    assert graphs[0].nodes.tolist() == [[1, 0, 0, 0.5], [0, 0, 1, 1.5], [1, 0, 0, 2.5]]
    assert graphs[1].nodes.tolist() == [[0, 1, 0, 3.5], [0, 1, 0, 4.5]]
    assert graphs[0].edge_features.tolist() == [[0, 1], [1, 0], [0, 1]]
    assert graphs[0].where.endswith("TOY_graph_labels.txt:1")
    # Given as its DS_A.txt, the same; without features, a constant node feature.
    assert [g.label for g in read_tu(folder / "TOY_A.txt")] == [1, -1, 1]
    plain = read_tu(_tu(tmp_path / "plain"))
    assert plain[0].nodes.tolist() == [[1.0]] * 3 and plain[0].edge_features is None


def test_a_tu_task_splits_and_fits(tmp_path):
    lines = {"A": [], "graph_indicator": [], "graph_labels": []}
    node = 1
    for g in range(30):  # 30 paths of 2..4 nodes, labelled by their length
        n = 2 + g % 3
        lines["graph_indicator"] += [str(g + 1)] * n
        lines["A"] += [f"{node + k}, {node + k + 1}" for k in range(n - 1)]
        lines["graph_labels"].append(str(n))
        node += n
    folder = _tu(tmp_path / "paths", edges=lines["A"], indicator=lines["graph_indicator"], labels=lines["graph_labels"])
    task = registry.build("task", "graphs", path=str(folder))
    splits = task.splits()
    assert task.classes == ["2", "3", "4"] and [len(splits[s]) for s in ("train", "val", "test")] == [21, 3, 6]
    for s in splits.values():  # the label is the node count, in every split
        assert torch.equal(s.mask.sum(1), s.target + 2)
    check_model_fits(task, "mpnn")


@pytest.mark.parametrize("line, match", [
    ("{not json", ":2: not valid JSON"),
    ("[1, 2]", ":2: expected a JSON object per line, got list"),
    ('{"nodes": [[1, 2]], "edges": []}', ":2: no key 'label'"),
    ('{"edges": [], "label": 1}', ":2: no key 'nodes'"),
    ('{"nodes": [[1, 2], [3, 4]], "edges": [[0, 2]], "edge_features": [[1]], "label": 1}',
     ":2: edges[0] names node 2, but the graph has nodes 0..1"),
    ('{"nodes": [[1, 2], [3, 4]], "edges": [[0]], "edge_features": [[1]], "label": 1}', ":2: edges[0] is [0]"),
    ('{"nodes": [[1, 2], [3]], "edges": [], "edge_features": [], "label": 1}', ":2: nodes[1] has 1 features, earlier ones have 2"),
    ('{"nodes": [[1, "x"]], "edges": [], "edge_features": [], "label": 1}', ':2: nodes[0] holds "x", not a finite number'),
    ('{"nodes": [], "edges": [], "edge_features": [], "label": 1}', ":2: a graph with no nodes"),
    ('{"nodes": [[1, 2]], "edges": [], "label": 1}', ":2: no 'edge_features' key, which the first graph has"),
    ('{"nodes": [[1, 2], [3, 4]], "edges": [[0, 1]], "edge_features": [], "label": 1}', ":2: 0 edge_features for 1 edges"),
    ('{"nodes": [[1, 2]], "edges": [], "edge_features": [], "label": null}', ":2: 'label' is null"),
])
def test_a_malformed_jsonl_line_is_one_data_error_naming_file_and_line(tmp_path, line, match):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(_graph(0, 1)) + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        registry.build("task", "graphs", path=str(path)).splits()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:2:") and match in message, message


@pytest.mark.parametrize("kind, lines, match", [
    ("A", ["1, 2", "2, 9"], "TOY_A.txt:2: node 9 does not exist (TOY_graph_indicator.txt has nodes 1..8)"),
    ("A", ["1, 2", "3, 4"], "TOY_A.txt:2: an edge between graphs 1 and 2"),
    ("A", ["1, 2", "2"], "TOY_A.txt:2: 1 values, the format needs 2"),
    ("A", ["1, x"], "TOY_A.txt:1: 'x' is not a number"),
    ("graph_indicator", ["1", "1", "1", "2", "2", "3", "3", "4"], "TOY_graph_indicator.txt:8: graph 4, but TOY_graph_labels.txt labels graphs 1..3"),
    ("graph_indicator", ["1", "1", "2", "1", "2", "3", "3", "3"], "TOY_graph_indicator.txt:4: graph ids must not decrease"),
    ("graph_labels", ["1", "1.5", "1"], "TOY_graph_labels.txt:2: '1.5' is not an integer"),
    ("node_labels", ["0", "1"], "TOY_node_labels.txt: 2 lines, one per node needs 8"),
])
def test_a_malformed_tu_file_is_one_data_error_naming_file_and_line(tmp_path, kind, lines, match):
    argument = {"A": "edges", "graph_indicator": "indicator", "graph_labels": "labels"}.get(kind)
    folder = _tu(tmp_path / "toy", **({argument: lines} if argument else {"extra": {kind: lines}}))
    with pytest.raises(DataError) as err:
        registry.build("task", "graphs", path=str(folder)).splits()
    message = str(err.value)
    assert "\n" not in message and match in message and str(folder) in message, message


def test_missing_and_ambiguous_sources_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        registry.build("task", "graphs", path=str(tmp_path / "nothing.jsonl")).splits()
    folder = _tu(tmp_path / "toy")
    (folder / "TOY_graph_labels.txt").unlink()
    with pytest.raises(DataError, match="TOY_graph_labels.txt: missing"):
        registry.build("task", "graphs", path=str(folder)).splits()
    with pytest.raises(DataError, match="no \\*_A.txt file in the folder"):
        registry.build("task", "graphs", path=str(tmp_path)).splits()
    one_class = _jsonl(tmp_path, [_graph(i, "a") for i in range(10)], "one.jsonl")
    with pytest.raises(DataError, match="only one class 'a'"):
        registry.build("task", "graphs", path=str(one_class)).splits()
    mixed = _jsonl(tmp_path, [_graph(i, [1, "1"][i % 2]) for i in range(10)], "mixed.jsonl")
    with pytest.raises(DataError, match="label '1' is given both as a string and as a number"):
        registry.build("task", "graphs", path=str(mixed)).splits()
