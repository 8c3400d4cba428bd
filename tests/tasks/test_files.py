"""User files: encodings (bad bytes named by line and offset, the `encoding` option), pyarrow's
CSV path against the csv module's row pass, row line numbers, and the cache of parsed arrays."""
import csv
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyformer.cli import main
from anyformer.errors import ConfigError, DataError
from anyformer.tasks import files, table_cache
from anyformer.tasks.tabular import TabularCSVTask
from anyformer.tasks.text import TextCSVTask, TextJSONLTask


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.CACHE_ENV, str(tmp_path / "cache"))


def _bad_jsonl(path, good=5, bad=20):
    lines = [b'{"text": "good", "label": 1}\n'] * good + [b'{"text": "h\xff\xfeo", "label": 0}\n'] * bad
    path.write_bytes(b"".join(lines))
    return path


def _bad_csv(path):
    rows = [b"a,b,label"] + [b"%d,x%d,%d" % (i, i % 3, i % 2) for i in range(40)]
    rows[31] = b"31,caf\xff,1"  # line 32
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def _offset(path, byte=b"\xff"):
    return path.read_bytes().index(byte)


# -- encodings: the reports
def test_jsonl_bad_byte_names_line_and_offset(tmp_path):
    path = _bad_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(DataError) as err:
        TextJSONLTask(path=str(path)).splits()
    assert str(err.value) == (f"{path}:6: byte 0xff at offset {_offset(path)} is not UTF-8; "
                              "save the file as UTF-8 or set task.encoding=latin-1")
    task = TextJSONLTask(path=str(path), encoding="latin-1")
    rows = task.read_rows()
    assert len(rows) == 25 and rows[5][1] == "h\xff\xfeo"


def test_tabular_csv_bad_byte_names_line_and_offset(tmp_path):
    path = _bad_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError) as err:
        TabularCSVTask(path=str(path), target="label").splits()
    assert str(err.value) == (f"{path}:32: byte 0xff at offset {_offset(path)} is not UTF-8; "
                              "save the file as UTF-8 or set task.encoding=latin-1")
    task = TabularCSVTask(path=str(path), target="label", encoding="latin-1")
    columns, labels, n = task._read()
    assert n == 40 and columns["b"].values == {"x0": 0, "x1": 1, "x2": 2, "caf\xff": 3}


def test_text_csv_bad_byte_and_other_encodings(tmp_path):
    path = _bad_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=rf"bad.csv:32: byte 0xff at offset {_offset(path)} is not UTF-8; .*task.encoding=latin-1"):
        TextCSVTask(path=str(path), text_column="b").splits()
    cp = tmp_path / "cp.csv"
    cp.write_bytes("text,label\n".encode() + "".join(f"caf\u00e9 \u2013 {i},{i % 2}\n" for i in range(20)).encode("cp1252"))
    assert TextCSVTask(path=str(cp), encoding="cp1252").read_rows()[0][1] == "caf\u00e9 \u2013 0"
    with pytest.raises(DataError, match=r"cp.csv:2: byte 0xe9 at offset 14 is not UTF-8"):
        TextCSVTask(path=str(cp)).read_rows()
    # a byte the chosen codec cannot decode: the hint names the option, not UTF-8
    with pytest.raises(DataError, match=r"cp.csv:2: byte 0xe9 at offset 14 is not valid ascii; set task.encoding to the file's encoding"):
        TextCSVTask(path=str(cp), encoding="ascii").read_rows()
    u16 = tmp_path / "u16.csv"
    u16.write_text("text,label\nna\u00efve,a\nb,b\n", encoding="utf-16")
    assert [r[1] for r in TextCSVTask(path=str(u16), encoding="utf-16").read_rows()] == ["na\u00efve", "b"]


def test_a_bom_is_no_text(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhi,a\n")
    assert files.read_csv(path) == (["text", "label"], [(2, ["hi", "a"])])
    assert files._read_csv_rows(path, ",", "utf-8", None) == (["text", "label"], [(2, ["hi", "a"])])


def test_unknown_encoding_is_a_config_error():
    with pytest.raises(ConfigError, match=r"task 'text-jsonl': unknown text encoding 'latn-1' \(did you mean .*latin_1"):
        TextJSONLTask(path="x.jsonl", encoding="latn-1")
    with pytest.raises(ConfigError, match="unknown text encoding 'rot13'"):
        TabularCSVTask(path="x.csv", encoding="rot13")
    assert TextCSVTask(path="x.csv", encoding="UTF8").encoding == "utf-8"


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = _bad_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(SystemExit) as done:
        main(["train", "--set", f"task=text-jsonl:{path}", "--steps", "2", "--out", str(tmp_path / "o")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert done.value.code == 2 and len(lines) == 1, lines
    assert f"bad.jsonl:6: byte 0xff at offset {_offset(path)} is not UTF-8" in lines[0]


# -- pyarrow's path and the row pass agree
def _write(path, rows, newline="\n"):
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerows(rows)
    path.write_text(buf.getvalue(), newline="")
    return path


def test_read_csv_quoted_newlines_crlf_blank_lines(tmp_path):
    rows = [["text", " label "], ["a\nb, c", "x"], ["", ""], [' say "hi" ', "y"], ["", ""], ["last", "z"]]
    path = _write(tmp_path / "q.csv", rows, "\r\n")
    fast = files._read_csv_arrow(path, ",", "utf-8")
    assert fast == files._read_csv_rows(path, ",", "utf-8", None)
    # a row's line is the one it ends on, as csv.reader's line_num counts
    assert fast == (["text", "label"], [(3, ["a\nb, c", "x"]), (5, ['say "hi"', "y"]), (7, ["last", "z"])])


def test_record_lines_refuses_what_it_cannot_know():
    assert files.record_lines(b"a,b\n1,2\n\n3,4").tolist() == [2, 4]
    assert files.record_lines(b'a\n"x\ny"\nz\n').tolist() == [3, 4]
    assert files.record_lines(b"a\r1\r") is None  # lone carriage returns: old Mac line ends
    assert files.record_lines(b'a,b\nx"y,1\n') is None  # a quote inside a field is text to the csv module
    assert files.record_lines(b'a,b\n"x"y,1\n') is None  # text after a closing quote


def test_read_csv_falls_back_for_exact_errors(tmp_path):
    (tmp_path / "short.csv").write_text("text,label\na,b\nc\n")
    with pytest.raises(DataError, match=r"short.csv:3: 1 fields, the header has 2"):
        files.read_csv(tmp_path / "short.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        files.read_csv(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text(",\ntext,label\n  \na,b\n")  # a blank row above the header, a blank line
    assert files.read_csv(tmp_path / "blank.csv") == (["text", "label"], [(4, ["a", "b"])])


FIELDS = st.sampled_from(["", " ", "a", "b c", " pad ", "\u00a0nb\u3000", "\x1fu", '"', 'x"y', "1,2", "line\nbreak", "\r\n", "é", "NA", "1", "-2.5e3"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(FIELDS, min_size=1, max_size=3), min_size=1, max_size=8),
       blank=st.lists(st.booleans(), min_size=8, max_size=8), newline=st.sampled_from(["\n", "\r\n"]))
def test_read_csv_arrow_agrees_with_the_row_pass(tmp_path, rows, blank, newline):
    text = "h1,h2" + newline
    for row, gap in zip(rows, blank + [False] * len(rows)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator=newline).writerow(row)
        text += buf.getvalue() + (newline if gap else "")
    path = tmp_path / "p.csv"
    path.write_text(text, newline="")
    try:
        slow = files._read_csv_rows(path, ",", "utf-8", None)
    except DataError:
        slow = "error"
    try:
        fast = files._read_csv_arrow(path, ",", "utf-8")
    except files.Unreadable:
        return  # read_csv then takes the row pass
    assert fast == slow


def test_read_csv_uses_pyarrow_for_a_plain_file(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.csv", [["text", "label"]] + [[f"t {i}", str(i % 2)] for i in range(50)])
    expected = files._read_csv_rows(path, ",", "utf-8", None)
    monkeypatch.setattr(files, "_read_csv_rows", lambda *a: pytest.fail("the row pass ran on a plain file"))
    assert files.read_csv(path) == expected


# -- the cache
def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    assert table_cache.cache_dir("tables") == tmp_path / "cache" / "tables"
    monkeypatch.setenv(table_cache.CACHE_ENV, "off")
    assert table_cache.cache_dir("tables") is None
    monkeypatch.delenv(table_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert table_cache.cache_dir("tables") == tmp_path / "xdg" / "anyformer" / "tables"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert table_cache.cache_dir("tables") == tmp_path / "home" / ".cache" / "anyformer" / "tables"


def test_cache_round_trip_staleness_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    arrays = {"x": np.arange(3.0), "names": np.array(["ab", "c"])}
    assert table_cache.cached_arrays("t", data, {"o": 1}) is None
    table_cache.cache_arrays("t", data, {"o": 1}, arrays)
    [entry] = (tmp_path / "cache" / "t").iterdir()  # one file, no temporary left behind
    got = table_cache.cached_arrays("t", data, {"o": 1})
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    assert table_cache.cached_arrays("t", data, {"o": 2}) is None  # other options: another entry
    data.write_text("a\n1\n2\n")  # the file changed: its entry is stale
    assert table_cache.cached_arrays("t", data, {"o": 1}) is None
    entry.write_bytes(b"PK\x03\x04 not really a zip")  # corrupt: a miss, then rewritten
    assert table_cache.cached_arrays("t", data, {"o": 1}) is None
    table_cache.cache_arrays("t", data, {"o": 1}, arrays)
    assert np.array_equal(table_cache.cached_arrays("t", data, {"o": 1})["x"], arrays["x"])
    with pytest.raises(TypeError, match="numbers and fixed-width strings only"):
        table_cache.cache_arrays("t", data, {"o": 1}, {"x": np.array([{}], dtype=object)})


def test_a_pickle_in_the_cache_is_never_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    table_cache.cache_arrays("t", data, {}, {"x": np.arange(2)})
    [entry] = (tmp_path / "cache" / "t").iterdir()
    key = str(np.load(entry)["__key__"])
    np.savez(entry, __key__=np.array(key), x=np.array([{"a": 1}], dtype=object))  # what a pickle entry would be
    assert table_cache.cached_arrays("t", data, {}) is None


def test_an_unwritable_cache_is_only_slower(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv(table_cache.CACHE_ENV, str(blocker))  # mkdir under a file fails with an OSError
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    table_cache.cache_arrays("t", data, {}, {"x": np.arange(2)})
    assert table_cache.cached_arrays("t", data, {}) is None and blocker.read_text() == ""


def test_small_files_are_not_cached(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    table_cache.cache_arrays("t", data, {}, {"x": np.arange(2)})
    assert not (tmp_path / "cache").exists() and os.path.getsize(data) < table_cache.CACHE_MIN_BYTES


def test_cache_entry_holds_json_not_objects(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    path = _write(tmp_path / "t.csv", [["x", "c", "label"]] + [[i, "ab"[i % 2], i % 2] for i in range(30)])
    TabularCSVTask(path=str(path), target="label").splits()
    [entry] = (tmp_path / "cache" / "tables").iterdir()
    with np.load(entry, allow_pickle=False) as z:
        assert all(z[k].dtype.kind in "iufU" for k in z.files)
        meta = json.loads(str(z["meta"]))
    assert meta["columns"] == [["x", None], ["c", ["a", "b"]]] and meta["labels"] == ["0", "1"]
