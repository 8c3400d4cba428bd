"""Readers of the METR-LA / PEMS-BAY layout: a sensor CSV (time stamp, one column per sensor)
and a graph file (an N x N adjacency CSV, or DCRNN's distance list from,to,cost)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from anyformer.errors import DataError
from anyformer.tasks.files import existing_file, parse_number, read_csv
from anyformer.tasks.traffic_data import SensorData

STAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                 "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")
DISTANCE_HEADERS = ({"from", "to", "cost"}, {"from", "to", "distance"})


def _stamp(value: str, path: Path, line: int) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    for fmt in STAMP_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            pass
    raise DataError(f"{path}:{line}: {value!r} in the first column is not a time stamp; write it as 2012-03-01 00:05:00")


def read_sensor_csv(path: str | Path) -> tuple[list[datetime], np.ndarray, list[str]]:
    """(time stamps, readings [T, N] float64 with empty cells as 0 = missing, sensor ids) of
    a CSV whose first column is the time stamp, then one column per sensor; the stamps must
    rise by one constant step."""
    p = existing_file(path, "sensor CSV", "pass a CSV of a time stamp column and one column per sensor (METR-LA layout)")
    header, rows = read_csv(p, what="sensor CSV")
    sensors = header[1:]
    if not sensors:
        raise DataError(f"{p}: only one column; give the time stamp, then one column per sensor")
    if len(set(sensors)) != len(sensors):
        raise DataError(f"{p}: the header names a sensor twice; give each sensor column a unique id")
    if len(rows) < 2:
        raise DataError(f"{p}: fewer than two rows of readings")
    stamps: list[datetime] = []
    values = np.zeros((len(rows), len(sensors)))
    step = None
    for r, (line, fields) in enumerate(rows):
        stamps.append(_stamp(fields[0], p, line))
        if r:
            gap = stamps[-1] - stamps[-2]
            if step is None:
                step = gap
                if step.total_seconds() <= 0:
                    raise DataError(f"{p}:{line}: time stamp {fields[0]!r} does not come after the row above; sort the rows by time")
            elif gap != step:
                raise DataError(f"{p}:{line}: time stamp {fields[0]!r} is {gap} after the row above, earlier rows "
                                f"step by {step}; give one row per step (fill a missing step with empty cells)")
        values[r] = [parse_number(f, p, line, h) if f else 0.0 for h, f in zip(sensors, fields[1:])]
    if 86400 % step.total_seconds():
        raise DataError(f"{p}: rows step by {step}, which does not divide a day; resample the readings")
    return stamps, values, sensors


def read_graph(path: str | Path, sensors: list[str], readings: str) -> tuple[list[tuple[str, str, float]] | None, np.ndarray | None]:
    """(distance list, None) of a from,to,cost CSV, or (None, weights [N, N]) of an adjacency
    CSV whose header names the sensors and whose N rows give each sensor's weights."""
    p = existing_file(path, "sensor graph", "pass an N x N adjacency CSV or a from,to,cost distance list")
    header, rows = read_csv(p, what="sensor graph")
    known = set(sensors)
    if set(h.lower() for h in header) in DISTANCE_HEADERS:
        cols = [h.lower() for h in header]
        a, b, c = cols.index("from"), cols.index("to"), cols.index("cost" if "cost" in cols else "distance")
        out = []
        for line, fields in rows:
            for k in (a, b):
                if fields[k] not in known:
                    raise DataError(f"{p}:{line}: sensor {fields[k]!r} is not a column of {readings}; "
                                    "list only the sensors the readings have")
            d = parse_number(fields[c], p, line, header[c])
            if d < 0:
                raise DataError(f"{p}:{line}: distance {fields[c]!r} is negative; give road distances >= 0")
            out.append((fields[a], fields[b], d))
        if not out:
            raise DataError(f"{p}: no distances below the header")
        return out, None
    unknown = [h for h in header if h not in known]
    if unknown:
        raise DataError(f"{p}:1: sensor {unknown[0]!r} is not a column of {readings}; the adjacency header must name "
                        "the readings' sensors (or write a from,to,cost distance list)")
    if len(header) != len(sensors) or len(rows) != len(sensors):
        raise DataError(f"{p}: an adjacency of {len(rows)} rows x {len(header)} columns for {len(sensors)} sensors; "
                        "give one row and one column per sensor")
    order = [sensors.index(h) for h in header]
    w = np.zeros((len(sensors), len(sensors)))
    for r, (line, fields) in enumerate(rows):
        w[order[r], order] = [parse_number(f, p, line, h) for h, f in zip(header, fields)]
    return None, w


def read_sensor_data(path: str | Path, graph: str | Path) -> tuple[SensorData, np.ndarray | None]:
    """The readings and their graph: distances in the SensorData, or an adjacency beside it."""
    stamps, values, sensors = read_sensor_csv(path)
    distances, adjacency = read_graph(graph, sensors, str(path))
    return SensorData(stamps, values, sensors, distances or []), adjacency
