"""Index benchmark at 10k / 100k / 1M passages on real-like data (bench/synthetic.py). Prints JSON.

Two steps, so that slow data preparation never holds the shared benchmark lock:

    .venv/bin/python bench/index.py --prepare --sizes 10000,100000,1000000
    flock /tmp/linklens-bench.lock .venv/bin/python bench/index.py --sizes 10000,100000,1000000 --out r.json

`--prepare` writes, per size, a data folder under --cache (default
../bench-cache/index-<size>/): a page store of synthetic crawled articles
and an embedding cache holding every passage's vector. Reuse it freely:
`LINKLENS_DATA_DIR=../bench-cache/index-100000 linklens serve` serves the
snapshot the timed run built there. The timed run measures, per size:

* build from cached embeddings: `linklens index --json` in a fresh process on that
  folder (store read in batches, passages cut, vectors from the cache, BM25 and
  the ANN built): wall time and the process's peak RSS [≤ 15 min, ≤ 3 GB at 1M];
* snapshot load (`Searcher.open`, server ready) and `linklens search` in a fresh
  process [≤ 2 s, ≤ 1.5 s];
* in-process search p50/p99: encode + retrieve + fuse + render, hybrid, k=10, over
  150 real questions (our fixture and sysdesign judged sets) [≤ 10 ms at 1M], and
  its parts at the depth a search reads (SEARCH_DEPTH): encoding, dense, BM25 [≤ 5 ms];
  then the same full searches with the 8-bit and the float query encoder, interleaved
  (wall, CPU and their ratio);
* ANN recall@10 (and @100) of the dense retrieval vs the exact scan, real query vectors [≥ 0.95];
* narrow filters (one host, one section): dense results identical to a brute-force
  scan of the allowed rows, over 20 queries × several filters;
* the searcher's memory in a fresh process (RSS, USS = private, PSS);
* `--kinds-at SIZE`: each dense kind built over the same vectors at that size (build
  time, p50, recall, private memory) and the exact-vs-post-filter crossover that
  sets EXACT_FILTER_MAX_SHARE: the data behind the thresholds.
Progress goes to stderr; only the JSON result goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.synthetic import (  # noqa: E402
    DEFAULT_CACHE,
    PREPARED_FORMAT,
    SyntheticCorpus,
    base_passages,
    bundled_embed,
    fill_data_dir,
    snapshot_of_size,
)
from index import lexical, snapshot, vectors  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.search import SEARCH_DEPTH, Searcher  # noqa: E402
from index.vectors import RowFilter  # noqa: E402
from ingest.settings import load_settings  # noqa: E402
from tests.fixtures.relevance import judged_queries  # noqa: E402

CLI = REPO / ".venv" / "bin" / "linklens"
SYSDESIGN_QUERIES = REPO / "bench" / "sysdesign_queries.jsonl"
CLI_RUNS = 5
LATENCY_ROUNDS = 3
CANDIDATES = 100
FILTER_QUERIES = 20
NARROW_FILTERS = 6
SWEEP_SHARES = (0.01, 0.03, 0.1, 0.2, 0.4)
SWEEP_ROUNDS = 10
CLI_QUERY = "how to avoid hot shards when one tenant sends far more traffic"
BUILD_TIMEOUT_S = 3 * 3600


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def queries() -> list[str]:
    out = [q.query for q in judged_queries()]
    if SYSDESIGN_QUERIES.exists():
        out += [json.loads(line)["query"] for line in SYSDESIGN_QUERIES.read_text().splitlines() if line.strip()]
    return out


def data_dir_for(cache: Path, size: int) -> Path:
    return cache / f"index-{size}"


# -- preparation (no lock) ------------------------------------------------------


def prepare(cache: Path, size: int) -> None:
    """The store + embedding cache + ONNX export of one size, unless already there."""
    data_dir = data_dir_for(cache, size)
    done = data_dir / "prepared.json"
    if done.exists() and json.loads(done.read_text()).get("format") == PREPARED_FORMAT:
        log(f"{size}: data ready in {data_dir}")
        return
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = load_settings(data_dir=data_dir)
    ref = configured_model(settings)
    base = base_passages(cache, bundled_embed, ref.id)
    started = time.perf_counter()
    passages = fill_data_dir(data_dir, SyntheticCorpus(base, size), ref.id, lambda m: log(f"{size}: {m}"))
    _ensure_export(settings)
    done.write_text(json.dumps({"passages": passages, "base": base.source, "seconds": time.perf_counter() - started,
                                "format": PREPARED_FORMAT}))
    log(f"{size}: {passages} passages ready in {data_dir}")


def _ensure_export(settings) -> None:  # type: ignore[no-untyped-def]
    """The ONNX query encoder, exported once (shared between sizes by hard links), so builds never load torch."""
    from index.embedder import load_sentence_model
    from index.onnx_export import cached_export, export_dir

    ref = configured_model(settings)
    shared = export_dir(DEFAULT_CACHE / "onnx-export", ref)
    if not shared.exists():
        cached_export(DEFAULT_CACHE / "onnx-export", ref, lambda: load_sentence_model(ref))
    target = export_dir(settings.cache_dir, ref)
    if not target.exists():
        shutil.copytree(shared, target, copy_function=os.link)


# -- timed measurements (under the lock) --------------------------------------


def timed_build(data_dir: Path, kind: str | None) -> dict[str, object]:
    """`linklens index --json` in a fresh process: wall time and its peak RSS (wait4's ru_maxrss)."""
    env = {**os.environ, "LINKLENS_DATA_DIR": str(data_dir)}
    command = [str(CLI), "index", "--json"] + (["--kind", kind] if kind else [])
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"build failed: {err[-800:]}")
    report = json.loads(out)
    return {
        "wall_s": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "passages": report["passages"],
        "articles": report["articles"],
        "embedded": report["embedded"],
        "kind": report["index_kind"],
        "index": report["index"],
    }


LOAD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from ingest.settings import load_settings
from index.search import Searcher
t1 = time.perf_counter()
c1 = time.process_time()
s = Searcher.open(load_settings())
t2 = time.perf_counter()
c2 = time.process_time()
s.search(sys.argv[1])
t3 = time.perf_counter()
import psutil
for q in sys.argv[2:]:
    s.search(q)
m = psutil.Process().memory_full_info()
rollup = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
anon = int(rollup["Anonymous"].split()[0]) / 1024
print(json.dumps({"imports_s": t1 - t0, "open_s": t2 - t1, "open_cpu_s": c2 - c1, "first_search_s": t3 - t2,
                  "rss_mb": m.rss / 2**20, "pss_mb": m.pss / 2**20, "anonymous_mb": anon}))
"""


IMPORTS_ONLY = "import cli.main, index.search, faiss, onnxruntime, tokenizers"


def fresh_process(data_dir: Path, sample: list[str]) -> dict[str, object]:
    env = {**os.environ, "LINKLENS_DATA_DIR": str(data_dir)}
    runs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, CLI_QUERY, *sample], cwd=REPO, env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        runs.append(json.loads(done.stdout))
    best = min(runs, key=lambda r: r["open_s"])
    cli, imports = [], []
    for _ in range(CLI_RUNS):
        started = time.perf_counter()
        done = subprocess.run([str(CLI), "search", CLI_QUERY, "--json"], cwd=REPO, env=env, capture_output=True)
        cli.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode()[-500:])
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS_ONLY], cwd=REPO, env=env, check=True)
        imports.append(time.perf_counter() - started)
    return {
        "snapshot_load_s": round(statistics.median(r["open_s"] for r in runs), 3),
        "snapshot_load_min_s": round(best["open_s"], 3),
        "snapshot_load_cpu_s": round(statistics.median(r["open_cpu_s"] for r in runs), 3),
        "cli_search_median_s": round(statistics.median(cli), 3),
        "cli_search_min_s": round(min(cli), 3),
        # The same process doing nothing but the imports: the machine's floor at this moment.
        "imports_only_median_s": round(statistics.median(imports), 3),
        # anonymous = what each extra worker adds; mapped index files are shared page cache.
        "searcher_memory_mb": {k: round(best[k], 1) for k in ("rss_mb", "pss_mb", "anonymous_mb")},
    }


class CachedVectors:
    """Stands in for the query encoder to time the search part alone (vectors computed beforehand)."""

    def __init__(self, encoder, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.dimension = encoder.dimension
        self._vectors = {q: encoder.encode(q) for q in texts}

    def encode(self, text: str) -> np.ndarray:
        return self._vectors[" ".join(text.split())]


class Timer:
    """Wall and CPU (the whole process's: a hybrid search scores BM25 on a second thread) milliseconds of steps.

    On a shared, overloaded machine wall time includes waiting for a core; CPU
    time does not, so both are reported.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, step):  # type: ignore[no-untyped-def]
        wall, cpu = time.perf_counter(), time.process_time()
        out = step()
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)
        return out

    def summary(self, name: str) -> dict[str, float]:
        return {
            f"{name}_p50_ms": percentile(self.wall, 50),
            f"{name}_p99_ms": percentile(self.wall, 99),
            f"{name}_cpu_p50_ms": percentile(self.cpu, 50),
        }


def latency(searcher: Searcher, texts: list[str]) -> dict[str, float]:
    loaded = searcher._loaded  # bench-only look inside
    encoder = loaded.encoder
    full, encode, without, dense, bm25 = Timer(), Timer(), Timer(), Timer(), Timer()
    for text in texts[:5]:
        searcher.search(text)
    for _ in range(LATENCY_ROUNDS):
        for q in texts:
            full.run(lambda: searcher.search(q, k=10))  # noqa: B023 - called at once
            vector = encode.run(lambda: encoder.encode(q))  # noqa: B023
            # the depth a search reads, whatever k (index.search.SEARCH_DEPTH)
            dense.run(lambda: loaded.dense.search(vector, SEARCH_DEPTH))  # noqa: B023
            stems = lexical.terms(q)
            bm25.run(lambda: loaded.lexical.top(stems, SEARCH_DEPTH))  # noqa: B023
    loaded.encoder = CachedVectors(encoder, [" ".join(q.split()) for q in texts])
    try:
        for _ in range(LATENCY_ROUNDS):
            for q in texts:
                without.run(lambda: searcher.search(q, k=10))  # noqa: B023
    finally:
        loaded.encoder = encoder
    return {
        **full.summary("search"),
        **encode.summary("encode"),
        **without.summary("search_without_encoding"),
        **dense.summary("dense"),
        **bm25.summary("bm25"),
    }


def precision_latency(data_dir: Path, texts: list[str]) -> dict[str, object]:
    """Full searches with the 8-bit and the float query encoder on the same snapshot, interleaved.

    Query by query, alternating which goes first, so both see the same machine: on a
    noisy box their ratio means something even when the absolute figures do not.
    """
    searchers = {p: Searcher.open(load_settings(data_dir=data_dir, query_precision=p)) for p in ("int8", "float")}
    full = {p: Timer() for p in searchers}
    encode = {p: Timer() for p in searchers}
    try:
        for searcher in searchers.values():
            for text in texts[:5]:
                searcher.search(text)
        for round_ in range(LATENCY_ROUNDS):
            for i, q in enumerate(texts):
                for p in ("int8", "float") if (i + round_) % 2 == 0 else ("float", "int8"):
                    encoder = searchers[p]._loaded.encoder  # bench-only look inside
                    full[p].run(lambda: searchers[p].search(q, k=10))  # noqa: B023
                    encode[p].run(lambda: encoder.encode(q))  # noqa: B023
        out: dict[str, object] = {
            p: {"encoder": searchers[p].stats()["query_encoder_file"], **full[p].summary("search"),
                **encode[p].summary("encode")}
            for p in searchers
        }  # fmt: skip
    finally:
        for searcher in searchers.values():
            searcher.close()
    ratios = {}
    for key in ("search_p50_ms", "search_cpu_p50_ms", "encode_p50_ms", "encode_cpu_p50_ms"):
        ratios[key] = round(out["int8"][key] / out["float"][key], 3)  # type: ignore[index]
    out["int8_over_float"] = ratios
    return out


def recall(dense: vectors.DenseIndex, query_vectors: np.ndarray) -> dict[str, float]:
    """Overlap of the dense retrieval's top 10 / top 100 with the exact scan's."""
    at10, at100 = [], []
    for q in query_vectors:
        rows, _ = dense.search(q, CANDIDATES)
        exact, _ = dense.exact(q, CANDIDATES)
        at10.append(len(set(rows[:10].tolist()) & set(exact[:10].tolist())) / 10)
        at100.append(len(set(rows.tolist()) & set(exact.tolist())) / CANDIDATES)
    return {"recall_at_10": round(float(np.mean(at10)), 4), "recall_at_100": round(float(np.mean(at100)), 4)}


def narrow_filters(searcher: Searcher, query_vectors: np.ndarray) -> dict[str, object]:
    """One-host and one-section filters: dense rows vs a brute-force scan of the allowed rows.

    Filters at most EXACT_FILTER_MAX_SHARE wide must be identical; broader ones go
    through the ANN with post-filter, and their recall@10 is reported instead.
    """
    loaded = searcher._loaded
    columns = loaded.columns
    host_sizes = np.bincount(np.asarray(columns.host), weights=np.asarray(columns.passages))
    order = np.argsort(host_sizes)[::-1]
    picks = [int(order[i]) for i in np.linspace(0, min(len(order) - 1, 200), NARROW_FILTERS // 2).astype(int)]
    hosts = [columns.hosts[i] for i in picks]
    sections = [label for label, _ in sorted(columns.sections, key=lambda x: x[1])[: NARROW_FILTERS // 2]]
    out: dict[str, object] = {}
    identical = total = 0
    for kind, values in (("host", hosts), ("section", sections)):
        for value in values:
            allowed = loaded.filter_rows(value if kind == "section" else None, value if kind == "host" else None)
            assert allowed is not None
            same, overlap, times = 0, [], Timer()
            for q in query_vectors[:FILTER_QUERIES]:
                rows, _ = times.run(lambda: loaded.dense.search(q, CANDIDATES, allowed))  # noqa: B023
                exact, _ = loaded.dense.exact(q, CANDIDATES, allowed.rows.astype(np.int64))
                same += int(rows.tolist() == exact.tolist())
                overlap.append(len(set(rows[:10].tolist()) & set(exact[:10].tolist())) / 10)
            narrow = loaded.dense.ann is None or allowed.share <= loaded.dense.params.exact_filter_max_share
            path = "exact" if narrow else "ann+post-filter"
            entry: dict[str, object] = {"share": round(allowed.share, 5), "path": path}
            entry.update(times.summary("dense"))
            if narrow:
                entry["identical_to_brute_force"] = f"{same}/{FILTER_QUERIES}"
                identical += same
                total += FILTER_QUERIES
            else:
                entry["recall_at_10"] = round(float(np.mean(overlap)), 4)
            out[f"{kind}={value}"] = entry
    out["narrow_all_identical"] = identical == total
    return out


def filter_sweep(dense: vectors.DenseIndex, columns, query_vectors: np.ndarray) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """p50 of the exact path vs the ANN post-filter path by filter share: where they cross sets the threshold."""
    if dense.ann is None:
        return {"skipped": "flat index: every filter is exact"}
    rng = np.random.default_rng(11)
    row_article = np.asarray(columns.row_article)
    out = {}
    for share in SWEEP_SHARES:
        articles = rng.random(len(columns)) < share
        mask = articles[row_article]
        allowed = RowFilter(mask, np.flatnonzero(mask).astype(np.int32))
        exact, post = Timer(), Timer()
        fetch = min(dense.size, int(np.ceil(CANDIDATES / allowed.share * vectors.OVERFETCH_MARGIN)))
        for q in query_vectors[:SWEEP_ROUNDS]:
            exact.run(lambda: dense.exact(q, CANDIDATES, allowed.rows.astype(np.int64)))  # noqa: B023
            post.run(lambda: dense.approximate(q, fetch))  # noqa: B023
        out[str(share)] = {"rows": len(allowed.rows), "fetch": fetch, **exact.summary("exact"),
                           **post.summary("postfilter")}  # fmt: skip
    return out


def anonymous_mb() -> float:
    """This process's anonymous memory: what is not a shareable file mapping."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return 0.0


def kinds_at(data_dir: Path, query_vectors: np.ndarray, kinds: list[str]) -> dict[str, object]:
    """Each dense kind over the snapshot's own vectors.npy: build time, p50, recall, private memory."""
    import faiss

    folder = snapshot.current_folder(load_settings(data_dir=data_dir).snapshots_dir, data_dir)
    scratch = data_dir / "kinds"
    scratch.mkdir(exist_ok=True)
    (scratch / vectors.VECTORS_FILE).unlink(missing_ok=True)
    os.link(folder / vectors.VECTORS_FILE, scratch / vectors.VECTORS_FILE)
    n = int(np.load(scratch / vectors.VECTORS_FILE, mmap_mode="r").shape[0])
    out: dict[str, object] = {}
    for kind in kinds:
        params = vectors.params_for(kind, n)
        started = time.perf_counter()
        ann = vectors.build_ann(scratch / vectors.VECTORS_FILE, params, 2)
        build_s = time.perf_counter() - started
        if ann is not None:
            vectors.save_ann(ann, scratch / vectors.ANN_FILE)
            del ann
        before = anonymous_mb()
        dense = vectors.DenseIndex.open(scratch, params)
        private_mb = anonymous_mb() - before
        timer = Timer()
        for q in query_vectors:
            timer.run(lambda: dense.search(q, CANDIDATES))  # noqa: B023
        faiss.omp_set_num_threads(1)
        out[kind] = {
            "params": params.to_dict(),
            "ann_build_s": round(build_s, 1),
            "ann_file_mb": round((scratch / vectors.ANN_FILE).stat().st_size / 2**20, 1) if kind != "flat" else 0,
            **timer.summary("dense"),
            "anonymous_memory_after_load_mb": round(private_mb, 1),
            **recall(dense, query_vectors),
        }
        (scratch / vectors.ANN_FILE).unlink(missing_ok=True)
    return out


def measure(cache: Path, size: int, kinds: list[str] | None, build: bool = True) -> dict[str, object]:
    data_dir = data_dir_for(cache, size)
    done = data_dir / "prepared.json"
    if not done.exists() or json.loads(done.read_text()).get("format") != PREPARED_FORMAT:
        raise SystemExit(f"no prepared data for {size} in {data_dir} (or prepared by older code) — run: "
                         f"bench/index.py --prepare --sizes {size}")
    texts = queries()
    result: dict[str, object] = {}
    if build:
        log(f"{size}: timed build from cached embeddings")
        result["build"] = timed_build(data_dir, None)
    result["snapshot"] = snapshot_of_size(data_dir, size)
    log(f"{size}: fresh processes")
    result.update(fresh_process(data_dir, texts[:20]))
    searcher = Searcher.open(load_settings(data_dir=data_dir))
    encoder = searcher._loaded.encoder
    query_vectors = np.stack([encoder.encode(" ".join(q.split())) for q in texts])
    log(f"{size}: latency")
    result["latency"] = latency(searcher, texts)
    log(f"{size}: 8-bit vs float query encoder, interleaved")
    result["query_precision"] = precision_latency(data_dir, texts)
    log(f"{size}: recall and filters")
    result["ann"] = {"kind": searcher.stats()["index_kind"], **recall(searcher._loaded.dense, query_vectors)}
    result["narrow_filters"] = narrow_filters(searcher, query_vectors)
    result["filter_sweep"] = filter_sweep(searcher._loaded.dense, searcher._loaded.columns, query_vectors)
    searcher.close()
    if kinds:
        log(f"{size}: kinds {kinds}")
        result["kinds"] = kinds_at(data_dir, query_vectors, kinds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Passages per synthetic corpus.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="Where data folders and base vectors live.")
    parser.add_argument("--prepare", action="store_true", help="Only prepare data folders (no lock needed).")
    parser.add_argument("--kinds-at", type=int, default=100_000, help="Size at which every kind is compared (0: none).")
    parser.add_argument("--fixture", action="store_true", help="Also run the fixture/real-corpus build benchmark.")
    parser.add_argument("--out", type=Path, help="Also write the JSON report to this file.")
    parser.add_argument("--no-build", action="store_true", help="Time the snapshots already built (skip the builds).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.prepare:
        for size in sizes:
            prepare(args.cache, size)
        return
    result: dict[str, object] = {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    for size in sizes:
        kinds = list(vectors.KINDS) if size == args.kinds_at else None
        result[str(size)] = measure(args.cache, size, kinds, build=not args.no_build)
        log(json.dumps(result[str(size)]))
    if args.fixture:
        from bench.index_fixture import embedding_throughput, fixture_build, real_corpus_build, real_passage_texts
        from index.embedder import Embedder

        embedder = Embedder(configured_model(load_settings()))
        result["fixture_build"] = fixture_build(embedder)
        result["embedding"] = embedding_throughput(embedder, real_passage_texts()[:48])
        result["real_corpus"] = real_corpus_build(embedder)
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
