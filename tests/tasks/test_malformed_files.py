"""A corpus of malformed and degenerate user files, run through `anyformer train` for every
task that reads one: each must end in exit code 2 and exactly one stderr line, `error: ...`,
naming the file (and its line where there is one) and what is wrong. The files are written
in tmp_path; the CLI runs in-process (a subprocess per case would cost seconds each).

Also the tabular column statistics of degenerate columns, which only this file tests."""
from __future__ import annotations

import gzip
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from anyformer.cli import main
from anyformer.errors import DataError
from anyformer.tasks import table_cache
from anyformer.tasks.fashion_mnist import write_idx
from anyformer.tasks.tabular import TabularCSVTask


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv(table_cache.CACHE_ENV, "off")


@dataclass
class Case:
    """One malformed file: `make(tmp_path)` writes it and returns (CLI args naming the task
    and its data, the file the message must name, text the message must hold)."""

    name: str
    task: str
    make: Callable[[Path], tuple[list[str], Path, str]]


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _rows(n: int, row: Callable[[int], str]) -> str:
    return "".join(row(i) + "\n" for i in range(n))


def file_case(name: str, task: str, filename: str, data: bytes | str | Callable[[], bytes | str], expect: str) -> Case:
    """A case of one file given as `task=TASK:PATH`."""
    def make(folder: Path):
        path = _write(folder, filename, data() if callable(data) else data)
        return ["--set", f"task={task}:{path}"], path, expect
    return Case(name, task, make)


def npz_case(name: str, expect: str, **arrays) -> Case:
    def make(folder: Path):
        path = folder / "images.npz"
        np.savez(path, **{k: v() if callable(v) else v for k, v in arrays.items()})
        return ["--set", f"task=images-npz:{path}"], path, expect
    return Case(name, "images-npz", make)


def _pixels(n: int = 30, dtype=np.uint8) -> np.ndarray:
    return (np.arange(n * 16).reshape(n, 4, 4) % 200).astype(dtype)


def _nan_pixels() -> np.ndarray:
    x = _pixels(dtype=np.float32)
    x[3, 1, 2] = x[5, 0, 0] = np.nan
    return x


def _good_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=_pixels(200), y=np.arange(200) % 2)
    return buf.getvalue()


def _zip_of_text() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x", "not an array")
        z.writestr("y", "nor this")
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, _pixels())
    return buf.getvalue()


GARBAGE = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
BAD_UTF8 = "\xff\xfe"  # written through latin-1 below: two bytes that are no UTF-8
TEXT_OK = _rows(20, lambda i: f"review {i},{'ab'[i % 2]}")
SERIES = _rows(60, lambda i: f"2020-01-01 {i % 24:02d}:00:00,{i % 7},{i % 5}")
HUGE = "w" * (2 << 20)  # a 2 MiB field


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


def ucr_case(name: str, train: str, test: str | None, expect: str, part: str = "TRAIN") -> Case:
    header = "@problemName Toy\n@timeStamps false\n@univariate true\n@classLabel true a b\n@data\n"

    def make(folder: Path):
        _write(folder, "Toy_TRAIN.ts", header + train if train is not None else b"")
        if test is not None:
            _write(folder, "Toy_TEST.ts", header + test)
        return ["--set", "task=ucr:Toy", "--set", f"task.data_dir={folder}"], folder / f"Toy_{part}.ts", expect
    return Case(name, "ucr", make)


UCR_OK = _rows(12, lambda i: f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}")


def mnist_case(name: str, write: Callable[[Path], Path], expect: str) -> Case:
    def make(folder: Path):
        return ["--set", "task=fashion-mnist", "--set", f"task.data_dir={folder}"], write(folder), expect
    return Case(name, "fashion-mnist", make)


def _mnist(folder: Path, images: bytes | None = None, labels: np.ndarray | None = None) -> None:
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((20, 8, 8)))
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(20) % 10 if labels is None else labels)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, 8, 8)))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(10) % 10)
    if images is not None:
        (folder / "train-images-idx3-ubyte").write_bytes(images)


def _mnist_truncated(folder: Path) -> Path:
    _mnist(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _mnist_garbage(folder: Path) -> Path:
    _mnist(folder, images=GARBAGE)
    return folder / "train-images-idx3-ubyte"


def _mnist_broken_gzip(folder: Path) -> Path:
    _mnist(folder)
    (folder / "train-images-idx3-ubyte").unlink()
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * 5000)[:-20])
    return path


def _mnist_label_count(folder: Path) -> Path:
    _mnist(folder, labels=np.arange(19) % 10)
    return folder / "train-labels-idx1-ubyte"


def _mnist_missing(folder: Path) -> Path:
    _mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    return folder


def lm_folder_case(name: str, files: dict[str, bytes | str], named: str | None, expect: str) -> Case:
    """A case of a folder given as `task=lm:FOLDER` holding `files`; the message names the
    file `named` in it (None: the folder itself)."""
    def make(folder: Path):
        root = folder / "texts"
        root.mkdir()
        for filename, data in files.items():
            _write(root, filename, data)
        return ["--set", f"task=lm:{root}"], root if named is None else root / named, expect
    return Case(name, "lm", make)


def _lm_missing(folder: Path):
    path = folder / "no-such-notes.txt"
    return ["--set", f"task=lm:{path}"], path, "does not exist"


def _stamps(i: int) -> str:
    return f"2012-03-01 {i // 12:02d}:{i % 12 * 5:02d}:00"


TRAFFIC_OK = "timestamp,s1,s2,s3\n" + _rows(60, lambda i: f"{_stamps(i)},{60 + i % 7},{55 + i % 5},{50 + i % 3}")
DISTANCES_OK = "from,to,cost\ns1,s2,100.0\ns2,s3,250.5\n"


def traffic_case(name: str, readings: str, graph: str, bad: str, expect: str) -> Case:
    """Sensor readings and their graph (task traffic); `bad` names the file the message names."""
    def make(folder: Path):
        paths = {"readings": _write(folder, "speeds.csv", readings), "graph": _write(folder, "distances.csv", graph)}
        return ["--set", f"task=traffic:{paths['readings']}", "--set", f"task.graph={paths['graph']}"], paths[bad], expect
    return Case(name, "traffic", make)


# Twenty small graphs as JSON lines, labels 0 and 1; the cases replace line 3.
GRAPH_LINES = [json.dumps({"nodes": [[1.0], [float(i)]], "edges": [[0, 1]], "label": i % 2}) for i in range(20)]


def _graphs_with(line3: str) -> str:
    return "\n".join(GRAPH_LINES[:2] + [line3] + GRAPH_LINES[3:]) + "\n"


def tu_case(name: str, edges: str, expect: str) -> Case:
    """A TU Dortmund dataset folder (task graphs) of two graphs whose DS_A.txt is `edges`."""
    def make(folder: Path):
        ds = folder / "toy"
        ds.mkdir()
        _write(ds, "TOY_graph_indicator.txt", "1\n1\n2\n2\n")
        _write(ds, "TOY_graph_labels.txt", "0\n1\n")
        return ["--set", f"task=graphs:{ds}"], _write(ds, "TOY_A.txt", edges), expect
    return Case(name, "graphs", make)


# A click log whose line 3 (candidate i9) is the one the cases break.
CLICKS_OK = "user,age,history,item,click\nu1,1,i1|i2,i3,0\nu2,0,i1,i9,1\n" + "".join(
    f"u{i % 4},{i % 3},i1|i{i % 5},i{2 + i % 3},{i % 2}\n" for i in range(40))


CASES = [
    # -- lm (a text file or a folder of them)
    file_case("empty", "lm", "notes.txt", "", "the file is empty"),
    file_case("blank lines only", "lm", "notes.txt", "\n \n\n", "the file is empty"),
    file_case("shorter than three contexts", "lm", "notes.txt", "To be, or not to be.\n" * 10,
              "too few for train, val and test splits of one context (128)"),
    file_case("bad UTF-8 bytes", "lm", "notes.txt", _latin1("To be, or not to be.\nThat is " + BAD_UTF8 + "\n"), ":2: byte 0xff"),
    file_case("binary garbage", "lm", "notes.txt", GARBAGE, "not UTF-8"),
    Case("missing file", "lm", _lm_missing),
    lm_folder_case("folder without text files", {"notes.csv": "a,b\n1,2\n"}, None, "no .txt or .md file"),
    lm_folder_case("folder of empty text files", {"a.txt": "", "b.md": "\n"}, None, "hold no text"),
    lm_folder_case("bad bytes in a folder's file", {"a.txt": "fine text\n" * 100, "b.txt": _latin1("x" + BAD_UTF8)}, "b.txt",
                   ":1: byte 0xff"),
    # -- traffic (sensor readings + their graph)
    traffic_case("not a number", TRAFFIC_OK.replace(",61,", ",6x1,", 1), DISTANCES_OK, "readings", ":3: column 's1' holds '6x1'"),
    traffic_case("ragged row", TRAFFIC_OK.replace(",61,", ",61,7,", 1), DISTANCES_OK, "readings", ":3:"),
    traffic_case("bad time stamp", TRAFFIC_OK.replace("2012-03-01 00:10:00", "yesterday", 1), DISTANCES_OK, "readings",
                 ":4: 'yesterday' in the first column is not a time stamp"),
    traffic_case("uneven time steps", TRAFFIC_OK.replace("2012-03-01 00:10:00", "2012-03-01 00:12:00", 1), DISTANCES_OK,
                 "readings", ":4: time stamp '2012-03-01 00:12:00' is 0:07:00 after the row above"),
    traffic_case("unknown sensor", TRAFFIC_OK, DISTANCES_OK + "s3,s9,10\n", "graph", ":4: sensor 's9' is not a column of"),
    # -- text-csv
    file_case("empty", "text-csv", "t.csv", "", "the file is empty"),
    file_case("header only", "text-csv", "t.csv", "text,label\n", "no data rows"),
    file_case("blank lines only", "text-csv", "t.csv", "\n\n\n", "the file is empty"),
    file_case("wrong field count", "text-csv", "t.csv", "text,label\na,x\nb,y,z\n", ":3: 3 fields, the header has 2"),
    file_case("unclosed quote (truncated)", "text-csv", "t.csv", 'text,label\na,x\n"b,y\n', ":3: 1 fields, the header has 2"),
    file_case("bad UTF-8 bytes", "text-csv", "t.csv", _latin1("text,label\na,x\nb" + BAD_UTF8 + ",y\n"), ":3: byte 0xff"),
    file_case("binary garbage", "text-csv", "t.csv", GARBAGE, "not UTF-8"),
    file_case("JSON lines named .csv", "text-csv", "t.csv", '{"text": "a", "label": "x"}\n', "no column 'text'"),
    file_case("no label column", "text-csv", "t.csv", "text,lable\na,x\n", "no column 'label' (did you mean 'lable'?)"),
    file_case("empty label", "text-csv", "t.csv", "text,label\na,x\nb,\n", ":3: empty label"),
    file_case("single class", "text-csv", "t.csv", "text,label\n" + _rows(20, lambda i: f"t{i},a"),
              "only one class 'a'"),
    file_case("unknown split name", "text-csv", "t.csv", "text,label,split\na,x,train\nb,y,tset\n", ":3: split 'tset'"),
    file_case("a split with no rows", "text-csv", "t.csv", "text,label,split\n" + _rows(10, lambda i: f"t{i},{'ab'[i % 2]},train"),
              "no row has split 'val'"),
    file_case("too few rows", "text-csv", "t.csv", "text,label\na,x\nb,y\n", "split is empty"),
    file_case("huge line, then a bad row", "text-csv", "t.csv", f"text,label\n{HUGE},x\nb,y,z\n", ":3: 3 fields"),
    # -- text-jsonl
    file_case("empty", "text-jsonl", "t.jsonl", "", "no data rows"),
    file_case("not JSON", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{text: b}\n', ":2: not valid JSON"),
    file_case("truncated last line", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "lab', ":2: not valid JSON"),
    file_case("a list per line", "text-jsonl", "t.jsonl", '["a", "x"]\n', ":1: expected a JSON object per line, got list"),
    file_case("null label", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n',
              ":2: the label in 'label' is null"),
    file_case("object label", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": {"k": 1}}\n',
              ":2: the label in 'label' is a JSON object"),
    file_case("nested list label", "text-jsonl", "t.jsonl", '{"text": "a", "label": ["x"]}\n{"text": "b", "label": [["y"]]}\n',
              ":2: the label in 'label' is a JSON list"),
    file_case("NaN label", "text-jsonl", "t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n',
              ":2: the label in 'label' is NaN"),
    file_case("null text", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n',
              ":2: the text in 'text' is null"),
    file_case("object text", "text-jsonl", "t.jsonl", '{"text": "a", "label": "x"}\n{"text": {"k": 1}, "label": "y"}\n',
              ":2: the text in 'text' is a JSON object"),
    file_case("list text", "text-jsonl", "t.jsonl", '{"text": ["a"], "label": "x"}\n', ":1: the text in 'text' is a JSON list"),
    file_case("missing key", "text-jsonl", "t.jsonl", '{"text": "a", "lable": "x"}\n', ":1: no key 'label'"),
    file_case("single class", "text-jsonl", "t.jsonl", _rows(20, lambda i: json.dumps({"text": f"t{i}", "label": "a"})),
              "only one class 'a'"),
    file_case("same labels on every row", "text-jsonl", "t.jsonl",
              _rows(20, lambda i: json.dumps({"text": f"t{i}", "label": ["a", "b"]})), "every row has the labels ['a', 'b']"),
    file_case("bad UTF-8 bytes", "text-jsonl", "t.jsonl", _latin1('{"text": "a", "label": "x"}\n{"text": "' + BAD_UTF8 + '", "label": "y"}\n'),
              ":2: byte 0xff"),
    file_case("binary garbage", "text-jsonl", "t.jsonl", GARBAGE, "not UTF-8"),
    file_case("CSV named .jsonl", "text-jsonl", "t.jsonl", TEXT_OK, ":1: not valid JSON"),
    # -- tabular-csv
    file_case("empty", "tabular-csv", "r.csv", "", "the file is empty"),
    file_case("header only", "tabular-csv", "r.csv", "a,b,label\n", "no data rows below the header"),
    file_case("wrong field count", "tabular-csv", "r.csv", "a,b,label\n1,2,x\n3,y\n", ":3: 2 fields, the header has 3"),
    file_case("no target column", "tabular-csv", "r.csv", "a,b,lable\n1,2,x\n", "no column 'label'"),
    file_case("only the target", "tabular-csv", "r.csv", "label\nx\ny\n", "no feature columns besides the target"),
    file_case("empty target", "tabular-csv", "r.csv", "a,b,label\n1,2,x\n3,4,\n", ":3: empty target 'label'"),
    file_case("NaN target", "tabular-csv", "r.csv", "a,b,label\n" + _rows(20, lambda i: f"{i},{i},{'nan' if i == 6 else 'xy'[i % 2]}"),
              ":8: the target 'label' is missing ('nan'; 1 rows in all)"),
    file_case("all-NaN target", "tabular-csv", "r.csv", "a,b,label\n" + _rows(20, lambda i: f"{i},{i},NaN"),
              "the target column 'label' holds no values"),
    file_case("single class", "tabular-csv", "r.csv", "a,b,label\n" + _rows(20, lambda i: f"{i},{i},x"),
              "only one class 'x' in the target column 'label'"),
    file_case("all-NaN column", "tabular-csv", "r.csv", "a,b,label\n" + _rows(20, lambda i: f"{i},nan,{'xy'[i % 2]}"),
              "column 'b' holds no numbers"),
    file_case("all-inf column", "tabular-csv", "r.csv", "a,b,label\n" + _rows(20, lambda i: f"{i},inf,{'xy'[i % 2]}"),
              "column 'b' holds no numbers"),
    file_case("too few rows", "tabular-csv", "r.csv", "a,label\n1,x\n2,y\n", "split is empty"),
    file_case("bad UTF-8 bytes", "tabular-csv", "r.csv", _latin1("a,b,label\n1,2,x\n3,4," + BAD_UTF8 + "\n"), ":3: byte 0xff"),
    file_case("binary garbage", "tabular-csv", "r.csv", GARBAGE, "not UTF-8"),
    file_case("NPZ named .csv", "tabular-csv", "r.csv", _good_npz, "not UTF-8"),
    # -- images-npz
    file_case("text named .npz", "images-npz", "i.npz", "x,y\n1,2\n", "not a NumPy .npz archive of plain arrays; save with np.savez"),
    file_case("empty", "images-npz", "i.npz", b"", "not a NumPy .npz archive of plain arrays"),
    file_case("a .npy named .npz", "images-npz", "i.npz", _npy, "not a NumPy .npz archive of plain arrays"),
    file_case("truncated", "images-npz", "i.npz", lambda: _good_npz()[:3000], "not a NumPy .npz archive of plain arrays"),
    file_case("binary garbage", "images-npz", "i.npz", GARBAGE, "not a NumPy .npz archive of plain arrays"),
    file_case("zip of text", "images-npz", "i.npz", _zip_of_text, "member 'x' is not a NumPy array"),
    npz_case("object array", "array 'x' is not a plain numeric array", x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3)),
    npz_case("no y", "no array 'y'; it holds x", x=_pixels()),
    npz_case("x and y lengths differ", "y must be one label per image (30), got shape [29]", x=_pixels(), y=np.arange(29) % 2),
    npz_case("wrong ndim", "got shape [30, 16]", x=_pixels().reshape(30, 16), y=np.arange(30) % 2),
    npz_case("zero images", "holds no images", x=np.zeros((0, 4, 4), dtype=np.uint8), y=np.zeros(0)),
    npz_case("zero-size images", "hold no pixels", x=np.zeros((30, 0, 4), dtype=np.uint8), y=np.arange(30) % 2),
    npz_case("NaN pixels", "2 pixels are NaN or infinite, the first in image 3", x=_nan_pixels, y=np.arange(30) % 2),
    npz_case("complex pixels", "images hold complex numbers", x=_pixels(dtype=np.complex64), y=np.arange(30) % 2),
    npz_case("int64 pixels", "images of dtype int64 have no known pixel range", x=_pixels(dtype=np.int64), y=np.arange(30) % 2),
    npz_case("single class", "only one class 0 in the labels", x=_pixels(), y=np.zeros(30, dtype=int)),
    npz_case("NaN label", "1 labels are NaN or infinite", x=_pixels(), y=np.where(np.arange(30) == 2, np.nan, np.arange(30) % 2)),
    npz_case("test classes unseen", "y_test holds classes that y never has (7)", x=_pixels(), y=np.arange(30) % 2,
             x_test=_pixels(4), y_test=np.array([0, 1, 7, 0])),
    # -- forecast
    file_case("empty", "forecast", "f.csv", "", "the file is empty"),
    file_case("header only", "forecast", "f.csv", "date,a,OT\n", "no data rows below the header"),
    file_case("a text column", "forecast", "f.csv", "date,city,OT\n" + _rows(60, lambda i: f"2020-01-01,Paris,{i}"),
              ":2: column 'city' holds 'Paris', not a number"),
    file_case("text first column, not dates", "forecast", "f.csv", "id,a,OT\n" + _rows(60, lambda i: f"r{i},{i},{i}"),
              ":2: column 'id' holds 'r0', not a number (no column is named date"),
    file_case("only a time column", "forecast", "f.csv", "date\n2020-01-01\n", "only a time column ('date')"),
    file_case("NaN value", "forecast", "f.csv", "date,a,OT\n" + SERIES.replace(",3,", ",nan,", 1), ":5: column 'a' holds 'nan'"),
    file_case("inf value", "forecast", "f.csv", "date,a,OT\n" + SERIES.replace(",4\n", ",inf\n", 1), "not a finite number"),
    file_case("empty value", "forecast", "f.csv", "date,a,OT\n2020-01-01,1,2\n2020-01-02,,3\n", ":3: column 'a' holds '', not a number"),
    file_case("wrong field count", "forecast", "f.csv", "date,a,OT\n2020-01-01,1,2\n2020-01-02,3\n", ":3: 2 fields, the header has 3"),
    file_case("too short", "forecast", "f.csv", "date,a,OT\n" + SERIES, "fewer than input_len + horizon"),
    file_case("bad UTF-8 bytes", "forecast", "f.csv", _latin1("date,a,OT\n2020-01-01,1,2\n" + BAD_UTF8 + ",3,4\n"), ":3: byte 0xff"),
    file_case("binary garbage", "forecast", "f.csv", GARBAGE, "not UTF-8"),
    # -- ucr (a local data_dir)
    ucr_case("no TEST file", UCR_OK, None, "does not exist", part="TEST"),
    ucr_case("empty TRAIN file", None, UCR_OK, "no series after @data"),
    ucr_case("not a number", UCR_OK.replace("3,4,5", "3,x,5"), UCR_OK, ":9: 'x' is not a number"),
    ucr_case("dimensions differ", UCR_OK.replace("3,4,5:b", "3,4,5:1,2:b"), UCR_OK, ":9: 2 dimensions, earlier lines have 1"),
    ucr_case("no label separator", UCR_OK.replace("3,4,5:b", "3,4,5"), UCR_OK, ":9: no ':' before the class label"),
    ucr_case("undeclared label", UCR_OK.replace("3,4,5:b", "3,4,5:c"), UCR_OK, "labels ['c'] are not among the declared"),
    ucr_case("single class", UCR_OK.replace(":b", ":a"), UCR_OK, "only one class 'a' in the class labels"),
    # -- fashion-mnist (a local data_dir)
    mnist_case("missing file", _mnist_missing, "no t10k-labels-idx1-ubyte[.gz]"),
    mnist_case("truncated IDX", _mnist_truncated, "the file is truncated or corrupt"),
    # -- graphs (JSON lines, or a TU Dortmund dataset folder)
    file_case("bad JSON", "graphs", "graphs.jsonl", _graphs_with('{"nodes": [[1.0]'), ":3: not valid JSON"),
    file_case("edge to a missing node", "graphs", "graphs.jsonl",
              _graphs_with('{"nodes": [[1.0], [2.0]], "edges": [[0, 5]], "label": 0}'),
              ":3: edges[0] names node 5, but the graph has nodes 0..1"),
    file_case("no label", "graphs", "graphs.jsonl", _graphs_with('{"nodes": [[1.0], [2.0]], "edges": [[0, 1]]}'),
              ":3: no key 'label'"),
    file_case("ragged node features", "graphs", "graphs.jsonl",
              _graphs_with('{"nodes": [[1.0, 2.0], [2.0, 3.0]], "edges": [[0, 1]], "label": 0}'),
              ":3: nodes[0] has 2 features, earlier ones have 1"),
    file_case("one class", "graphs", "graphs.jsonl", "\n".join(GRAPH_LINES[::2]) + "\n", "only one class 0"),
    tu_case("TU edge between graphs", "1, 2\n2, 3\n3, 4\n", ":2: an edge between graphs 1 and 2"),
    tu_case("TU edge to a missing node", "1, 2\n3, 9\n", ":2: node 9 does not exist"),
    # -- ctr (a click log)
    file_case("click not 0 or 1", "ctr", "clicks.csv", CLICKS_OK.replace(",i9,1\n", ",i9,yes\n"), ":3: column 'click' holds 'yes'"),
    file_case("no candidate", "ctr", "clicks.csv", CLICKS_OK.replace(",i9,1\n", ",,1\n"), ":3: column 'item' is empty"),
    file_case("wrong field count", "ctr", "clicks.csv", CLICKS_OK.replace(",i9,1\n", ",i9,1,9\n"), ":3: 6 fields, the header has 5"),
    file_case("no history column", "ctr", "clicks.csv", CLICKS_OK.replace("history", "past", 1), "no column 'history'"),
    file_case("clicks only", "ctr", "clicks.csv", CLICKS_OK.replace(",0\n", ",1\n"), "needs clicks and non-clicks"),
    mnist_case("binary garbage", _mnist_garbage, "not an IDX file"),
    mnist_case("broken gzip", _mnist_broken_gzip, "a broken gzip file"),
    mnist_case("label count", _mnist_label_count, "expected 20 labels (one per image)"),
]


def run_case(case: Case, folder: Path, capsys) -> tuple[int, list[str], Path, str]:
    """Write the case's file(s) under `folder` and run `anyformer train` on them in-process:
    (exit code, non-blank stderr lines, the file named, the text expected)."""
    args, path, expect = case.make(folder)
    try:
        main(["train", *args, "--steps", "1", "--out", str(folder / "run")])
        code = 0
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()], path, expect


@pytest.mark.parametrize("case", CASES, ids=[f"{c.task}: {c.name}" for c in CASES])
def test_a_malformed_file_is_one_line_naming_it(case, tmp_path, capsys):
    code, lines, path, expect = run_case(case, tmp_path, capsys)
    assert code == 2 and len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    assert line.count(str(path)) == 1, line  # named once: no message wrapped in another
    assert expect in line, line
    if expect.startswith(":"):  # the line number follows the file's name directly
        assert f"{path}{expect.split(':')[0]}:{expect.split(':')[1]}:" in line, line
    assert "Traceback" not in line and "allow_pickle" not in line


def test_every_task_that_reads_a_user_file_is_in_the_corpus():
    from anyformer import registry
    readers = {t for t in registry.list_components("task") if registry.get("task", t).file_options}
    assert readers == {c.task for c in CASES}


# -- tabular column statistics on degenerate columns (post-parse; no CLI needed)
def _tabular(tmp_path, rows, header=("a", "b", "label")) -> TabularCSVTask:
    path = tmp_path / "r.csv"
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return TabularCSVTask(path=str(path))


def test_an_all_missing_column_is_refused_without_numpy_warnings(tmp_path):
    # Reported: an all-NaN column printed four numpy RuntimeWarnings and trained on zeros.
    task = _tabular(tmp_path, [(i, "nan" if i % 2 else "", "xy"[i % 2]) for i in range(20)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"r.csv: column 'b' holds no numbers \(every value is missing or infinite\); "
                                            r'fill it or drop it \(--set task.drop=\["b"\]\)'):
            task.splits()


def test_column_statistics_skip_missing_values(tmp_path):
    # 'b' is missing on every row of class 'x' and a number on every row of class 'y'.
    rows = [(i, "nan" if i % 2 == 0 else i * 10.0, "xy"[i % 2]) for i in range(40)]
    task = _tabular(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = task.splits()
    b, y = s["train"].inputs["numeric"][:, 1], s["train"].target
    # Missing values become the train mean (0); the others are z-scored over the finite values only.
    assert (b[y == 0] == 0).all()
    assert abs(float(b[y == 1].mean())) < 1e-5 and abs(float(b[y == 1].std(unbiased=False)) - 1) < 1e-5
