"""Ray index benchmark: embedding throughput with 1 and 2 actors, Ray vs local index wall time, scale-out estimate.

Input: the real articles of ../shared/corpora/sysdesign when that folder exists (read in
place, never copied), else the fixture test articles. Every build starts with empty
embedding caches (so each embeds every passage) and a ready ONNX export (made once, shared),
so the engines are compared on the same work. Ray runs locally with LINKLENS_RAY_CPUS CPUs
(default 2); the Ray start is timed apart, as a cluster would already be running.

The scale-out estimate takes the best measured per-core model rate (passages over the seconds the
actors spent in the model times their torch threads) and assumes it holds
per core on every node (one single-threaded actor per core, embedding dominating the build); the
second, conservative estimate takes the whole embedding phase's measured rate per CPU instead
(actor start, Ray scheduling and idle time included). Neither counts the driver's serial
snapshot build (BM25, FAISS), which bench/index.py measures.

Run under the bench lock: flock /tmp/linklens-bench.lock .venv/bin/python bench/ray_embed.py --out FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.index_fixture import REAL_CORPUS, fill_real_store, log, real_corpus_rows  # noqa: E402
from cli.engines.ray_index import run_ray_index  # noqa: E402
from index.build import build_index  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.onnx_export import cached_export  # noqa: E402
from ingest.settings import Settings, load_settings  # noqa: E402
from ingest.store import Store  # noqa: E402
from tests.index_fixtures import fill_store  # noqa: E402

SCALE_PASSAGES = 2_500_000
SCALE_NODES = (1, 4, 16, 64)
SCALE_CORES_PER_NODE = (8, 16, 32)
RAY_CPUS = 2


def fill(store: Store, articles: int | None) -> str:
    """The benchmark corpus into `store`; returns its name."""
    if REAL_CORPUS.exists():
        rows = real_corpus_rows()[:articles] if articles else real_corpus_rows()
        fill_real_store(store, rows)
        return f"sysdesign ({len(rows)} articles)"
    fill_store(store)
    return "fixture test articles"


def data_folder(root: Path, name: str, seed: Settings, **overrides: object) -> Settings:
    """A data folder with the benchmark store and the seed's ONNX export (hard-linked), and no embedding cache."""
    settings = load_settings(data_dir=root / name, ray_cpus=RAY_CPUS, **overrides)
    shutil.copytree(seed.cache_dir, settings.cache_dir, copy_function=os.link)
    shutil.copy2(seed.store_path, settings.store_path)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=None, help="only the first N corpus articles")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here too")
    parser.add_argument("--actors", default="1,2", help="embedding actors of each Ray run (comma-separated)")
    parser.add_argument("--no-local", action="store_true", help="skip the local build (no Ray/local ratios)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seed = load_settings(data_dir=root / "seed")
        ref = configured_model(seed)
        embedder = Embedder(ref)
        export = cached_export(seed.cache_dir, ref, lambda: embedder.model)
        assert export is not None, "the bundled model must export to ONNX"
        with Store.open(seed.store_path) as store:
            corpus = fill(store, args.articles)
        log(f"corpus: {corpus}")

        local_s, passages = None, None
        if not args.no_local:
            local = data_folder(root, "local", seed)
            started = time.perf_counter()
            with Store.open(local.store_path) as store:
                passages = build_index(local, store, embedder=Embedder(ref)).passages
            local_s = time.perf_counter() - started
            log(f"local: {passages} passages in {local_s:.1f}s")

        started = time.perf_counter()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing reported to Ray's maintainers
        from cli.engines.ray_runtime import LOOPBACK_IP, START_OWN_RAY, ray_processes_started

        with ray_processes_started():  # on 127.0.0.1 only, like every Ray a benchmark starts
            ray.init(START_OWN_RAY, num_cpus=RAY_CPUS, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, _node_ip_address=LOOPBACK_IP)
        ray_start_s = time.perf_counter() - started
        runs = {}
        try:
            for actors in (int(a) for a in args.actors.split(",")):
                settings = data_folder(root, f"ray-{actors}", seed, embed_actors=actors)
                timings: dict[str, float] = {}
                ray_report = run_ray_index(settings, rebuild=False, quiet=True, timings=timings)
                passages = passages or int(ray_report["passages"])
                assert ray_report["embedded"] == passages, ray_report
                runs[actors] = {k: round(v, 2) for k, v in timings.items()}
                runs[actors]["embed_passages_per_s"] = round(passages / timings["passages_s"], 2)
                # steady rate of one core inside an actor: passages / (model seconds × that actor's threads)
                model = passages / timings["encode_core_s"]
                runs[actors]["model_passages_per_core_s"] = round(model, 2)
                phase = passages / timings["passages_s"] / RAY_CPUS
                runs[actors]["phase_passages_per_s_per_cpu"] = round(phase, 2)
                runs[actors]["phase_over_model_rate"] = round(phase / model, 3)
                log(f"ray, {actors} actor(s): {timings}")
        finally:
            ray.shutdown()

    assert passages is not None
    per_core = max(r["model_passages_per_core_s"] for r in runs.values())
    pipeline_per_core = max(r["embed_passages_per_s"] for r in runs.values()) / RAY_CPUS

    def hours(rate_per_core: float) -> dict[str, dict[str, float]]:
        return {
            f"{n}_cores_per_node": {
                f"{k}_nodes": round(SCALE_PASSAGES / (rate_per_core * n * k) / 3600, 2) for k in SCALE_NODES
            }
            for n in SCALE_CORES_PER_NODE
        }

    result = {
        "corpus": corpus,
        "passages": passages,
        "cpus": RAY_CPUS,
        "ray_start_s": round(ray_start_s, 2),
        "ray": {f"{a}_actors": r for a, r in runs.items()},
        "embed_passages_per_s_per_core": round(per_core, 2),
        "pipeline_passages_per_s_per_core": round(pipeline_per_core, 2),
        "scale_out_hours_for_2_5M_passages": hours(per_core),
        "scale_out_hours_for_2_5M_passages_at_pipeline_rate": hours(pipeline_per_core),
    }
    if local_s is not None:
        result["local"] = {"build_s": round(local_s, 2), "passages_per_s": round(passages / local_s, 2)}
        result["ray_over_local_build"] = {f"{a}_actors": round(r["total_s"] / local_s, 3) for a, r in runs.items()}
        result["ray_over_local_build_with_ray_start"] = {
            f"{a}_actors": round((r["total_s"] + ray_start_s) / local_s, 3) for a, r in runs.items()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
