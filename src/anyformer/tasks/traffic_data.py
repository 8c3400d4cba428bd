"""Generated road-sensor speeds (seeded) and the sensor graph's weights and Laplacian features."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

STEP_MINUTES = 5
STEPS_PER_DAY = 24 * 60 // STEP_MINUTES
# A Monday, as METR-LA's first day (2012-03-01 is a Thursday; any start works).
FIRST_STAMP = datetime(2012, 3, 5)


@dataclass
class SensorData:
    """Readings [T, N] (0 = missing), their time stamps, the sensor ids and the graph's
    directed distances (from, to, cost)."""

    stamps: list[datetime]
    readings: np.ndarray
    sensors: list[str]
    distances: list[tuple[str, str, float]]


def gaussian_weights(sensors: list[str], distances: list[tuple[str, str, float]], threshold: float) -> np.ndarray:
    """DCRNN's kernel (Li et al. 2018): w_ij = exp(-(d_ij / sigma)^2), sigma the std of the
    listed distances, weights below `threshold` set to 0; unlisted pairs 0 -> [N, N]."""
    index = {s: i for i, s in enumerate(sensors)}
    cost = np.array([d for _, _, d in distances], dtype=np.float64)
    sigma = cost.std() if len(cost) > 1 and cost.std() > 0 else max(float(cost.mean()) if len(cost) else 1.0, 1e-12)
    w = np.zeros((len(sensors), len(sensors)))
    for (a, b, _), d in zip(distances, cost):
        w[index[a], index[b]] = np.exp(-(d / sigma) ** 2)
    w[w < threshold] = 0.0
    return w


def laplacian_features(weights: np.ndarray, size: int) -> np.ndarray:
    """The eigenvectors of the 2nd..(size+1)th smallest eigenvalues of the symmetric
    normalised Laplacian I - D^-1/2 W D^-1/2 of the symmetrised graph -> [N, size] float32
    (zero columns past N - 1). Each vector's sign is fixed by its largest entry being
    positive, so the same graph always gives the same features."""
    w = np.maximum(weights, weights.T)
    np.fill_diagonal(w, 0.0)
    deg = w.sum(1)
    scale = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    lap = np.eye(len(w)) - scale[:, None] * w * scale[None, :]
    _, vectors = np.linalg.eigh(lap)
    vectors = vectors[:, 1:size + 1]
    peak = np.abs(vectors).argmax(0)
    vectors = vectors * np.sign(vectors[peak, np.arange(vectors.shape[1])])
    out = np.zeros((len(w), size), dtype=np.float32)
    out[:, :vectors.shape[1]] = vectors
    return out


def _road_graph(n: int, rng: np.random.Generator, neighbours: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Points in the unit square, each joined to its nearest neighbours; components joined
    by their closest pair until one remains -> (points [n, 2], undirected edges)."""
    points = rng.random((n, 2))
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    edges = {tuple(sorted((i, int(j)))) for i in range(n) for j in np.argsort(dist[i])[1:neighbours + 1]}
    while True:
        comp = _components(n, edges)
        if comp.max() == 0:
            return points, sorted(edges)
        inside, outside = np.where(comp == 0)[0], np.where(comp != 0)[0]
        sub = dist[np.ix_(inside, outside)]
        a, b = np.unravel_index(sub.argmin(), sub.shape)
        edges.add(tuple(sorted((int(inside[a]), int(outside[b])))))


def _components(n: int, edges: set[tuple[int, int]]) -> np.ndarray:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    roots = [find(i) for i in range(n)]
    order = {r: k for k, r in enumerate(dict.fromkeys([roots[0]] + roots))}
    return np.array([order[r] for r in roots])


def _hops(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """Hop distances [n, n] by breadth-first search."""
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    hops = np.full((n, n), n, dtype=np.int64)
    for s in range(n):
        hops[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in nbrs[u]:
                if hops[s, v] > hops[s, u] + 1:
                    hops[s, v] = hops[s, u] + 1
                    queue.append(v)
    return hops


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def generated_sensors(sensors: int, days: int, seed: int, neighbours: int = 3, incidents_per_day: float = 8.0,
                      hop_delay: int = 3, missing: float = 0.005) -> SensorData:
    """Speeds (mph) of `sensors` sensors on a random road graph over `days` days at 5-minute
    steps. Each of three regions (by x position) has its own morning and evening rush hours
    and its own weekend relief; congestion diffuses over the graph; incidents start at random
    sensors and reach the sensors `h` hops away `h * hop_delay` steps later, weaker, so a
    sensor's neighbours' history foretells its slowdowns; AR(1) noise; a share `missing` of
    readings, and a few two-hour outages, are 0 (missing)."""
    rng = np.random.default_rng(seed)
    points, edges = _road_graph(sensors, rng, neighbours)
    steps = days * STEPS_PER_DAY
    t = np.arange(steps)
    hours = (t % STEPS_PER_DAY) * STEP_MINUTES / 60.0
    weekday = ((t // STEPS_PER_DAY) % 7) < 5
    region = np.minimum((points[:, 0] * 3).astype(int), 2)
    morning = np.array([7.0, 8.0, 9.0]) + rng.normal(0, 0.2, 3)
    evening = np.array([18.5, 17.5, 16.5]) + rng.normal(0, 0.2, 3)
    depth = rng.uniform(12, 25, 3)
    weekend = np.array([0.15, 0.5, 0.85])
    congestion = np.zeros((steps, sensors))
    for r in range(3):
        daily = depth[r] * (_bump(hours, morning[r], 1.0) + 0.8 * _bump(hours, evening[r], 1.3))
        daily = daily * np.where(weekday, 1.0, weekend[r])
        congestion[:, region == r] = daily[:, None] * rng.uniform(0.6, 1.4, (region == r).sum())[None]
    adj = np.zeros((sensors, sensors))
    for a, b in edges:
        adj[a, b] = adj[b, a] = 1.0
    walk = adj / adj.sum(1, keepdims=True)
    for _ in range(2):  # diffusion: a sensor's congestion leans towards its neighbours'
        congestion = 0.6 * congestion + 0.4 * congestion @ walk.T
    hops = _hops(sensors, edges)
    incident = np.zeros((steps, sensors))
    for _ in range(int(incidents_per_day * days)):
        s0, t0 = rng.integers(sensors), rng.integers(steps)
        size, length = rng.uniform(15, 30), int(rng.integers(12, 36))
        shape = np.sin(np.linspace(0, np.pi, length)) ** 0.5
        for n in np.where(hops[s0] <= 3)[0]:
            start = t0 + hops[s0, n] * hop_delay
            end = min(start + length, steps)
            if start < steps:
                incident[start:end, n] += size * 0.7 ** hops[s0, n] * shape[:end - start]
    noise = np.zeros((steps, sensors))
    shocks = rng.normal(0, 1.2, (steps, sensors))
    for i in range(1, steps):
        noise[i] = 0.8 * noise[i - 1] + shocks[i]
    base = rng.uniform(58, 68, sensors)
    speed = np.clip(base - congestion - incident + noise, 5.0, 75.0)
    speed[rng.random(speed.shape) < missing] = 0.0
    for _ in range(max(1, days // 4)):
        s, t0 = rng.integers(sensors), rng.integers(steps)
        speed[t0:t0 + 24, s] = 0.0
    names = [f"s{i:03d}" for i in range(sensors)]
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    # Every pair, as DCRNN lists the road distances between all sensors: the kernel's sigma
    # (their std) then keeps the near ones.
    distances = [(names[a], names[b], float(dist[a, b])) for a in range(sensors) for b in range(sensors) if a != b]
    stamps = [FIRST_STAMP + timedelta(minutes=STEP_MINUTES * int(i)) for i in t]
    return SensorData(stamps, speed.astype(np.float64), names, distances)
