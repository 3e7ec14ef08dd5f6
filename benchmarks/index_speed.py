"""Identify latency and recall@1 of Flat / HNSW / IVF galleries of synthetic 512-d face embeddings.

    python benchmarks/index_speed.py --sizes 10000 100000 1000000

Synthetic data looks like a face gallery: ``n / per_identity`` identities, each a
random unit centre; a gallery vector or a query is its identity's centre plus
Gaussian noise (``--noise 1``: same-identity cosines near 0.5). Centres and noise
share a power-law variance spectrum with participation ratio ``--effective-dim``:
trained face embedders use ~100-200 effective dimensions of their 512 (stranger
cosines ~0 +- 0.08 at 128); ``--effective-dim 512`` is the isotropic worst case
(stranger cosines 0 +- 0.044, no structure for an index to exploit). The run prints the genuine/stranger score statistics of its data.
Queries are new samples of enrolled identities. recall@1 = share of queries whose approximate top-1 vector is
the exact (flat) top-1. Latency is per single-query ``search`` call (the identify
case), median and p95 over ``--latency-queries`` calls; build time is reported too.
The target: < 5 ms per query at 1e6 with recall@1 >= 0.95 for an approximate index.
Every setting is logged to MLflow (experiment ``facerec-benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from facerec.gallery import index as faiss_index

log = logging.getLogger(__name__)

EXPERIMENT = "facerec-benchmarks"
TARGET_MS, TARGET_RECALL = 5.0, 0.95


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-identity", type=int, default=5, help="gallery vectors per synthetic identity")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the identity centre")
    parser.add_argument(
        "--effective-dim",
        type=float,
        default=128,
        help="participation ratio of the identity-centre spectrum (512: isotropic)",
    )
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@1")
    parser.add_argument("--latency-queries", type=int, default=300, help="single-query calls timed")
    parser.add_argument("--hnsw-m", type=int, default=faiss_index.HNSW_DEFAULTS["m"])
    parser.add_argument("--ef-construction", type=int, default=faiss_index.HNSW_DEFAULTS["ef_construction"])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument(
        "--nlist-factor",
        type=float,
        default=1.0,
        help="IVF lists = factor * sqrt(n) (the gallery default is 4; 1 keeps k-means within "
        "minutes on 2 cores at 1e6)",
    )
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--kinds", nargs="+", default=list(faiss_index.INDEX_KINDS), choices=faiss_index.INDEX_KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def power_law_scales(dim: int, effective_dim: float) -> np.ndarray:
    """Per-axis std ``i ** (-a / 2)`` with ``a`` chosen so that the participation ratio
    ``(sum l)^2 / sum l^2`` of the variances ``l`` equals ``effective_dim``."""
    ranks = np.arange(1, dim + 1, dtype=np.float64)

    def ratio(a: float) -> float:
        lam = ranks**-a
        return lam.sum() ** 2 / (lam**2).sum()

    low, high = 0.0, 10.0
    if effective_dim >= dim:
        return np.ones(dim, np.float32)
    for _ in range(60):  # the ratio falls as a grows: bisect
        mid = (low + high) / 2
        low, high = (mid, high) if ratio(mid) > effective_dim else (low, mid)
    return (ranks ** (-low / 2)).astype(np.float32)


def synthetic(n: int, n_queries: int, dim: int, per_identity: int, noise: float, seed: int, effective_dim: float = 128):
    """Gallery (n, dim) and queries (n_queries, dim) of unit vectors clustered by identity."""
    rng = np.random.default_rng(seed)
    n_ids = max(1, n // per_identity)
    scales = power_law_scales(dim, effective_dim)
    scales /= np.sqrt((scales**2).sum())  # a draw has unit expected squared norm
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32) * scales
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(owner: np.ndarray) -> np.ndarray:
        x = rng.standard_normal((len(owner), dim), dtype=np.float32) * (scales * np.float32(noise))
        x += centres[owner]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    gallery = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        stop = min(n, start + 100_000)
        gallery[start:stop] = sample(np.arange(start, stop) % n_ids)
    return gallery, sample(rng.integers(0, n_ids, n_queries))


def latency_ms(index: faiss.Index, queries: np.ndarray) -> tuple[float, float]:
    """Median and p95 wall time (ms) of one ``search`` call with one query."""
    times = []
    for q in queries:
        start = time.perf_counter()
        faiss_index.search(index, q[None], 1)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def evaluate(index, queries, exact_top1, latency_queries, per_identity: int, n_ids: int) -> dict[str, float]:
    """recall@1 against exact search (same vector; same identity), single-query and batch latency."""
    start = time.perf_counter()
    _, ids = faiss_index.search(index, queries, 1)
    batch_ms = (time.perf_counter() - start) * 1000 / len(queries)
    p50, p95 = latency_ms(index, latency_queries)
    found = ids[:, 0]
    return {
        "recall_at_1": float((found == exact_top1).mean()),
        "identity_recall_at_1": float(((found % n_ids) == (exact_top1 % n_ids)).mean()),
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "batch_ms_per_query": batch_ms,
    }


def bench_size(n: int, args: argparse.Namespace) -> list[dict]:
    t0 = time.perf_counter()
    x, q = synthetic(n, args.queries, args.dim, args.per_identity, args.noise, args.seed, args.effective_dim)
    ids = np.arange(n, dtype=np.int64)
    log.info("n=%d: data in %.1f s", n, time.perf_counter() - t0)
    rows = []

    def build(kind: str, **params) -> tuple[faiss.Index, float]:
        start = time.perf_counter()
        index = faiss_index.build_index(x, ids, kind, **params)
        return index, time.perf_counter() - start

    flat, flat_build = build("flat")
    start = time.perf_counter()
    exact_scores, exact_ids = faiss_index.search(flat, q, 1)
    log.info("n=%d: exact ground truth in %.1f s", n, time.perf_counter() - start)
    exact_top1 = exact_ids[:, 0]
    shape = (args.per_identity, max(1, n // args.per_identity))  # vector i belongs to identity i % n_ids
    lat_q = q[: args.latency_queries]
    if "flat" in args.kinds:  # exact search scans everything: fewer timed calls at 1e6
        flat_q = lat_q[: max(20, args.latency_queries * 10_000 // n)]
        rows.append({"n": n, "kind": "flat", "build_s": flat_build, **evaluate(flat, q, exact_top1, flat_q, *shape)})
        log.info("%s", rows[-1])
    del flat
    if "hnsw" in args.kinds:
        index, seconds = build("hnsw", m=args.hnsw_m, ef_construction=args.ef_construction)
        for ef in args.ef_search:
            faiss_index.set_search_params(index, ef_search=ef)
            rows.append(
                {
                    "n": n,
                    "kind": "hnsw",
                    "m": args.hnsw_m,
                    "ef_construction": args.ef_construction,
                    "ef_search": ef,
                    "build_s": seconds,
                    **evaluate(index, q, exact_top1, lat_q, *shape),
                }
            )
            log.info("%s", rows[-1])
        del index
    if "ivf" in args.kinds:
        nlist = max(1, min(int(args.nlist_factor * n**0.5), n // faiss_index.MIN_POINTS_PER_LIST))
        index, seconds = build("ivf", nlist=nlist)
        for nprobe in args.nprobe:
            faiss_index.set_search_params(index, nprobe=nprobe)
            rows.append(
                {
                    "n": n,
                    "kind": "ivf",
                    "nlist": nlist,
                    "nprobe": min(nprobe, nlist),
                    "build_s": seconds,
                    **evaluate(index, q, exact_top1, lat_q, *shape),
                }
            )
            log.info("%s", rows[-1])
        del index
    stranger = np.einsum("ij,ij->i", x[:2000], x[::-1][:2000])  # (almost surely) different identities
    data = {
        "top1_score_median": float(np.median(exact_scores[:, 0])),
        "stranger_score_mean": float(stranger.mean()),
        "stranger_score_std": float(stranger.std()),
    }
    log.info("n=%d: data %s", n, data)
    return [{**r, **data} for r in rows]


def table(rows: list[dict]) -> str:
    lines = [
        "| n | index | parameters | build s | recall@1 | identity recall@1 | ms/query p50 | p95 | batch ms/query |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = {
            "hnsw": f"M={r.get('m')} efC={r.get('ef_construction')} efS={r.get('ef_search')}",
            "ivf": f"nlist={r.get('nlist')} nprobe={r.get('nprobe')}",
            "flat": "exact",
        }[r["kind"]]
        lines.append(
            f"| {r['n']:.0e} | {r['kind']} | {params} | {r['build_s']:.1f} | {r['recall_at_1']:.3f} | "
            f"{r['identity_recall_at_1']:.3f} | "
            f"{r['latency_ms_p50']:.3f} | {r['latency_ms_p95']:.3f} | {r['batch_ms_per_query']:.3f} |"
        )
    return "\n".join(lines)


def log_to_mlflow(rows: list[dict], args: argparse.Namespace, env: dict) -> None:
    import mlflow

    from facerec.tracking.runs import mlflow_run

    params = {k: v for k, v in vars(args).items() if k not in ("out", "no_mlflow")}
    with mlflow_run(EXPERIMENT, "index-speed", params=params, tags={"facerec.benchmark": "index_speed", **env}):
        for r in rows:
            name = f"{r['kind']}-n{r['n']:.0e}-" + "-".join(f"{k}{r[k]}" for k in ("ef_search", "nprobe") if k in r)
            with mlflow_run(
                EXPERIMENT,
                name,
                nested=True,
                params={
                    k: v
                    for k, v in r.items()
                    if k in ("n", "kind", "m", "ef_construction", "ef_search", "nlist", "nprobe")
                },
            ):
                mlflow.log_metrics(
                    {
                        k: float(v)
                        for k, v in r.items()
                        if k
                        in (
                            "build_s",
                            "recall_at_1",
                            "identity_recall_at_1",
                            "latency_ms_p50",
                            "latency_ms_p95",
                            "batch_ms_per_query",
                        )
                    }
                )
        mlflow.log_text(table(rows), "index_speed.md")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = {
        "cpu_count": str(os.cpu_count()),
        "faiss_threads": str(faiss.omp_get_max_threads()),
        "faiss_version": faiss.__version__,
        "load_avg_start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "machine": platform.processor() or platform.machine(),
    }
    rows: list[dict] = []
    for size in args.sizes:
        rows.extend(bench_size(int(size), args))
        print(table(rows), flush=True)
    env["load_avg_end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(json.dumps(env))
    for n in sorted({r["n"] for r in rows}):
        ok = [
            r
            for r in rows
            if r["n"] == n
            and r["kind"] != "flat"
            and r["latency_ms_p50"] < TARGET_MS
            and r["recall_at_1"] >= TARGET_RECALL
        ]
        best = min(ok, key=lambda r: r["latency_ms_p50"], default=None)
        print(f"n={n:.0e}: " + (f"target met by {best['kind']} {best}" if best else "target not met"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    if not args.no_mlflow:
        log_to_mlflow(rows, args, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
