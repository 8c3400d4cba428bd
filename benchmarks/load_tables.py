"""How fast anyformer loads a user's table: a network-flow CSV shaped like CIC-IDS2017's
(79 columns: integer counts and ports, float rates with a few NaN / Infinity, three text
columns, a repeated header name, headers padded with spaces, a string label), read by
(a) pandas.read_csv (the baseline), (b) anyformer's `tabular-csv` task cold (cache off),
both its reading pass alone (pyarrow's reader, then each column typed: float64 numbers or
category codes, the target's labels; what pandas.read_csv does) and the whole load (then
z-scoring with train statistics, train-split codes, the split tensors), and (c) the whole
load warm (its parsed-array cache hit).

Each measurement is a fresh subprocess, so its peak memory is its own: the child reads its
resident set before the load (after the imports: pandas for the baseline; anyformer, torch
and pyarrow, which the tasks import when they first read a CSV, for anyformer, and what
pyarrow imports on its first conversion: pandas, when it is installed), resets the
kernel's high-water mark (`/proc/self/clear_refs`), loads, and reports the load's wall time,
the peak RSS and the peak above the pre-load RSS ("load memory"). Kinds run interleaved
(a b c a b c ...) so that machine noise falls on all of them; figures are medians.
Writes results/load_tables.json and the "Loading user tables" section of benchmarks/README.md.

    python benchmarks/load_tables.py [--rows 20000] [--rounds 3] [--csv PATH] [--no-readme]

`--rows 200000` gives the README figure (a 111 MB file); `--csv PATH` reuses (or first
writes) the generated file at PATH. pandas is the baseline only (benchmarks/requirements.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- load_tables:begin -->", "<!-- load_tables:end -->"
KINDS = ("pandas", "read", "cold", "warm")
LABELS = {"pandas": "(a) pandas.read_csv", "read": "(b) anyformer's reading pass, cold (file -> typed columns)",
          "cold": "(b) anyformer tabular-csv load, cold (file -> split tensors)",
          "warm": "(c) anyformer tabular-csv load, warm (cache hit -> split tensors)"}

# CIC-IDS2017's MachineLearningCSV header (its spaces and its repeated ' Fwd Header Length'
# included), with three of its always-zero columns turned into text columns.
COLUMNS = [
    " Destination Port", " Flow Duration", " Total Fwd Packets", " Total Backward Packets",
    "Total Length of Fwd Packets", " Total Length of Bwd Packets", " Fwd Packet Length Max",
    " Fwd Packet Length Min", " Fwd Packet Length Mean", " Fwd Packet Length Std", "Bwd Packet Length Max",
    " Bwd Packet Length Min", " Bwd Packet Length Mean", " Bwd Packet Length Std", "Flow Bytes/s",
    " Flow Packets/s", " Flow IAT Mean", " Flow IAT Std", " Flow IAT Max", " Flow IAT Min", "Fwd IAT Total",
    " Fwd IAT Mean", " Fwd IAT Std", " Fwd IAT Max", " Fwd IAT Min", "Bwd IAT Total", " Bwd IAT Mean",
    " Bwd IAT Std", " Bwd IAT Max", " Bwd IAT Min", "Fwd PSH Flags", " Bwd PSH Flags", " Protocol",
    " Bwd URG Flags", " Fwd Header Length", " Bwd Header Length", "Fwd Packets/s", " Bwd Packets/s",
    " Min Packet Length", " Max Packet Length", " Packet Length Mean", " Packet Length Std",
    " Packet Length Variance", "FIN Flag Count", " SYN Flag Count", " RST Flag Count", " PSH Flag Count",
    " ACK Flag Count", " URG Flag Count", " Service", " ECE Flag Count", " Down/Up Ratio",
    " Average Packet Size", " Avg Fwd Segment Size", " Avg Bwd Segment Size", " Fwd Header Length",
    " State", " Fwd Avg Packets/Bulk", " Fwd Avg Bulk Rate", " Bwd Avg Bytes/Bulk", " Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate", "Subflow Fwd Packets", " Subflow Fwd Bytes", " Subflow Bwd Packets",
    " Subflow Bwd Bytes", "Init_Win_bytes_forward", " Init_Win_bytes_backward", " act_data_pkt_fwd",
    " min_seg_size_forward", "Active Mean", " Active Std", " Active Max", " Active Min", "Idle Mean",
    " Idle Std", " Idle Max", " Idle Min", " Label",
]
TEXT = {" Protocol": ["tcp", "udp", "icmp"],
        " Service": ["http", "https", "dns", "ssh", "ftp", "smtp", "ntp", "ldap", "smb", "rdp", "-"],
        " State": ["FIN", "CON", "INT", "REQ", "RST", "ACC", "CLO"]}
CLASSES = (["BENIGN"] * 16 + ["DoS Hulk"] * 3 + ["PortScan"] * 2 + ["DDoS"] * 2
           + ["DoS GoldenEye", "FTP-Patator", "SSH-Patator", "Bot"])
FLOAT = re.compile(r"Mean|Std|Variance|/s|Ratio|Average|Avg|Rate")


def write_flows(path: Path, rows: int, seed: int = 0, chunk: int = 20_000) -> Path:
    """The flow-like CSV: integer columns of several magnitudes, floats at up to 9 significant digits
    (as CICFlowMeter writes them), 'NaN' / 'Infinity' in the rate columns, text columns."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols = []
            for k, name in enumerate(COLUMNS):
                if name == " Label":
                    cols.append([CLASSES[i] for i in rng.integers(0, len(CLASSES), n)])
                elif name in TEXT:
                    values = TEXT[name]
                    cols.append([values[i] for i in rng.integers(0, len(values), n)])
                elif FLOAT.search(name):
                    x = rng.lognormal(3 + k % 7, 2.0, n) * (rng.random(n) < 0.95)
                    text = [f"{v:.9g}" for v in x.tolist()]
                    if "/s" in name:  # zero-duration flows: CICFlowMeter writes NaN and Infinity here
                        for i in np.flatnonzero(rng.random(n) < 0.002).tolist():
                            text[i] = "Infinity" if i % 2 else "NaN"
                    cols.append(text)
                else:
                    scale = 10 ** (1 + k % 8)
                    cols.append([str(v) for v in (rng.lognormal(0, 1.5, n) * scale / 20).astype(np.int64).tolist()])
            fh.write("\n".join(",".join(r) for r in zip(*cols)) + "\n")
    return path


# -- one measurement, in a child process
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, path: str) -> None:
    if kind == "pandas":
        import pandas as pd

        def load():
            return pd.read_csv(path).shape
    elif kind == "read":
        from anyformer.tasks.tabular import TabularCSVTask

        def load():
            columns, _, n = TabularCSVTask(path=path, target="Label")._read()
            return (n, len(columns) + 1)
    else:
        from anyformer.tasks.tabular import TabularCSVTask

        def load():
            task = TabularCSVTask(path=path, target="Label")
            s = task.splits()
            return (sum(len(s[k]) for k in s), len(task.numeric_columns) + len(task.categorical_columns) + 1)
    if kind != "pandas":  # the tasks import pyarrow when a CSV is read; pandas' import is not timed either
        import pyarrow
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
        # pyarrow imports pandas, when installed (here it is), on its first conversion: ~0.2 s once a process
        pyarrow.array([0.0]).to_numpy()
    base = _status_kb("VmRSS")
    try:  # reset the high-water mark to the current RSS, so the peak is the load's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    shape = load()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({"kind": kind, "seconds": seconds, "peak_kib": peak, "base_kib": base,
                      "hwm_reset": reset, "shape": list(shape)}))


def measure(kind: str, path: Path, cache: Path) -> dict:
    env = {**os.environ, "ANYFORMER_CACHE_DIR": str(cache) if kind == "warm" else "off"}
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{kind} child failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(path: Path, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="anyformer-cache-") as cache:
        measure("warm", path, Path(cache))  # fills the cache (and the page cache, for every kind)
        runs: dict[str, list[dict]] = {k: [] for k in KINDS}
        for _ in range(rounds):
            for kind in KINDS:
                runs[kind].append(measure(kind, path, Path(cache)))
                r = runs[kind][-1]
                print(f"  {kind:6s} {r['seconds']:7.3f} s  peak {r['peak_kib'] / 1024:7.0f} MiB  "
                      f"(+{(r['peak_kib'] - r['base_kib']) / 1024:.0f} over {r['base_kib'] / 1024:.0f})", flush=True)
    med = {k: {"seconds": statistics.median(r["seconds"] for r in rs),
               "peak_mib": statistics.median(r["peak_kib"] for r in rs) / 1024,
               "load_mib": statistics.median(r["peak_kib"] - r["base_kib"] for r in rs) / 1024,
               "base_mib": statistics.median(r["base_kib"] for r in rs) / 1024} for k, rs in runs.items()}
    p = med["pandas"]
    # times as the median of per-round ratios: a slow period of the shared machine hits a round's kinds alike
    ratios = {k: {"time_vs_pandas": statistics.median(r["seconds"] / b["seconds"] for r, b in zip(runs[k], runs["pandas"])),
                  "load_memory_vs_pandas": med[k]["load_mib"] / p["load_mib"],
                  "peak_vs_pandas": med[k]["peak_mib"] / p["peak_mib"]} for k in KINDS[1:]}
    targets = {}
    for k in ("read", "cold"):
        targets[f"{k}_time_le_1.5x_pandas"] = ratios[k]["time_vs_pandas"] <= 1.5
        targets[f"{k}_load_memory_le_pandas"] = ratios[k]["load_memory_vs_pandas"] <= 1.0
    return {"runs": runs, "median": med, "ratios": ratios, "targets": targets}


def section(report: dict) -> str:
    m, med, rat = report["machine"], report["median"], report["ratios"]
    lines = [BEGIN, "### Loading user tables (`load_tables.py`)", "",
             f"{report['rows']:,} rows x {report['columns']} columns, {report['file_mb']:.0f} MB, a generated "
             "CIC-IDS2017-shaped flow CSV; "
             f"{m['cpu_count']}-core CPU, Python {m['python']}, pandas {report['versions']['pandas']}, "
             f"pyarrow {report['versions']['pyarrow']}. Medians of {report['rounds']} interleaved rounds, each a fresh "
             "process (vs pandas: the median of per-round ratios); load memory = peak RSS during the load minus the RSS before it (after the imports; "
             "anyformer's imports include torch).", "",
             "| reader | seconds | vs pandas | load MiB | vs pandas | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for k in KINDS:
        r = med[k]
        vs_t = "1.00x" if k == "pandas" else f"{rat[k]['time_vs_pandas']:.2f}x"
        vs_m = "1.00x" if k == "pandas" else f"{rat[k]['load_memory_vs_pandas']:.2f}x"
        lines.append(f"| {LABELS[k]} | {r['seconds']:.2f} | {vs_t} | {r['load_mib']:.0f} | {vs_m} | {r['peak_mib']:.0f} |")
    t = report["targets"]
    said = lambda ok: "met" if ok else "missed"  # noqa: E731
    lines += ["", "Targets (cold: <= 1.5x pandas' time, load memory <= pandas'): reading pass "
              f"{said(t['read_time_le_1.5x_pandas'])} / {said(t['read_load_memory_le_pandas'])}; whole load "
              f"{said(t['cold_time_le_1.5x_pandas'])} / {said(t['cold_load_memory_le_pandas'])}."]
    if report.get("notes"):
        lines += ["", report["notes"]]
    lines.append(END)
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: text, readme, flags=re.S)
    else:
        readme = readme.rstrip("\n") + "\n\n## Loading user tables\n\n" + text + "\n"
    README.write_text(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--csv", type=Path, help="generated table to reuse (written there first when absent)")
    parser.add_argument("--notes", default="", help="a paragraph to print under the table in README.md")
    parser.add_argument("--no-readme", action="store_true", help="print only; leave README.md alone")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import pandas
    import pyarrow

    start = time.time()
    with tempfile.TemporaryDirectory(prefix="load-tables-") as tmp:
        path = args.csv or Path(tmp) / "flows.csv"
        if not path.is_file():
            t0 = time.perf_counter()
            write_flows(path, args.rows)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = sum(1 for _ in open(path)) - 1
        result = run(path, args.rounds)
        size = path.stat().st_size
    sys.path.insert(0, str(HERE))
    from common import machine

    from anyformer.bench import save_json

    report = {"suite": "load_tables", "machine": machine(), "rows": rows, "columns": len(COLUMNS), "file_mb": size / 1e6,
              "rounds": args.rounds, "versions": {"pandas": pandas.__version__, "pyarrow": pyarrow.__version__},
              "notes": args.notes, "seconds": time.time() - start, **result}
    save_json(report, RESULTS / "load_tables.json")
    for k, r in result["median"].items():
        print(f"{k}: {r['seconds']:.3f} s, load {r['load_mib']:.0f} MiB, peak {r['peak_mib']:.0f} MiB")
    if not args.no_readme:
        write_readme(section(report))
        print(f"updated {README}")
    print(f"wrote {RESULTS / 'load_tables.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
