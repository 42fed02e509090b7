"""Ray crawl benchmark: `crawl --engine ray` against `--engine local` on one list, and a 2,000-host simulation.

    python bench/ray_crawl.py [--build [--nodes 2]] [--pages 500] [--hosts 12] [--latency-ms 50]
                              [--scale-links 20000] [--scale-hosts 2000] [--scale-latency-ms 20] [--no-scale]
                              [--logs DIR] [--out results.json]

1. Same list, same machine: the fixture web of bench/crawl.py (real articles, in its own process)
   crawled by `linklens crawl --engine local` and `--engine ray`, each a fresh process and data
   folder, as a user runs them: wall time of each and their ratio. The Ray run is verbose (-v) so
   its log says where the fixed cost goes: starting Ray (`ray ready after`), until the first
   outcome reaches the driver (planning the dataset, starting workers and extraction actors).
   With `--build`, whole `linklens build` runs instead (crawl + index, every passage embedded:
   fresh data folders, so neither engine has an embedding cache), the Ray one on a cluster of
   `--nodes` nodes on this machine (Ray's own `ray.cluster_utils.Cluster`, the cores shared out:
   1 CPU each on 2 cores, one embedding actor per node) with its datasets on moto's S3 server on
   loopback, started before the clock runs (a cluster is already up when a user builds), against
   the local engine on all the cores. Reported: the whole-build ratio (the issue's ≤ 1.2×) and the
   embedding phase's passages/s per CPU against the model's inside an actor (≥ 80%), from the Ray
   command's own log line. `--nodes 1`: Ray started inside the command, datasets in its folder.
2. Scale simulation: `--scale-links` links over `--scale-hosts` loopback hosts (127.0.x.y, one
   listening socket, small pages, each answer held `--scale-latency-ms`), per-host delay 0,
   crawled with the Ray engine. Each host's first link redirects to one of `SCALE_TARGETS`
   platforms, and every `DEAD_EVERY`-th host has a dead link the web archive (on the same server)
   recovers: it must end with exactly those links `redirected` and `archived` and the rest `ok`.
   Peak RSS of the driver process (sampled every 0.2 s; Ray's own processes and workers are
   reported apart), pages/s and pages/s per CPU, and politeness: the most requests the server had
   in flight at once at each host, listed hosts, redirect targets and the archive, against the
   configured per-host concurrency (`within_limit`; `limit_reached` says the shared hosts were
   busy enough for the check to mean something).

Results are JSON on stdout (and in --out); `--logs DIR` keeps each command's stderr (`ray-build.log`,
...), where the Ray command's -v lines, stamped with the time since it started, give its timeline.
Run under `flock /tmp/linklens-bench.lock`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.crawl import PeakMemory, corpus, emit, start_web  # noqa: E402
from tests.hostileweb.many_hosts import ARCHIVE_ADDRESS, ManyHosts, host_address, target_address  # noqa: E402

CORES = os.cpu_count() or 1
TARGET_BUILD_RATIO = 1.2  # the target for the whole build (crawl + index) on Ray vs local
TARGET_EMBEDDING_SHARE = 0.8  # the embedding phase's rate per CPU against the model's per core inside an actor
BUCKET = "linklens-bench"
# Dummies for moto's server on loopback: real credentials in the environment must never reach it (or AWS).
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_SESSION_TOKEN": "bench",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
          "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
EMBEDDING_LINE = (r"embedding phase: (?P<passages>\d+) passages in (?P<seconds>[\d.]+) s on (?P<cpus>[\d.]+) CPUs: "
                  r"(?P<phase>[\d.]+) passages/s per CPU; in the model (?P<model>[\d.]+) per core")
TARGET_DRIVER_PEAK_MB = 1024
SCALE_DEADLINE_S = 1800
SCALE_TARGETS = 4  # redirect targets (platforms) the simulation's hosts share
DEAD_EVERY = 10  # one dead link (recovered from the archive) on every tenth host
SCALE_PER_HOST_CONCURRENCY = 2
PHASES = {"ray_ready_s": r"ray ready after ([\d.]+) s", "first_outcome_s": r"first outcome after ([\d.]+) s",
          "crawl_done_s": r"crawl done after ([\d.]+) s"}


def busy_cpu_seconds() -> float:
    """CPU-seconds this machine has spent not idle since boot (psutil's system-wide times: user, nice, system, irq,
    softirq, steal).

    Read around a command, under the bench lock, it is the work that command made every process do: the command,
    Ray's own processes and workers, the fixture web and S3 (an idle 2-node cluster costs ~0.04 cores)."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq + times.steal)


def crawl(list_file: Path, data_dir: Path, engine: str, env: dict[str, str],
          timeout_s: float = SCALE_DEADLINE_S, verb: str = "crawl", logs: Path | None = None) -> dict[str, object]:
    """`linklens [-v] crawl|build LIST --engine ENGINE --json` in a process of its own: summary, wall time, memory."""
    verbose = ["-v"] if engine == "ray" else []
    command = [sys.executable, "-m", "cli.main", *verbose, verb, str(list_file), "--engine", engine, "--json"]
    started, busy_before = time.perf_counter(), busy_cpu_seconds()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, cwd=REPO, env={**env, "LINKLENS_DATA_DIR": str(data_dir)},
                                stdout=subprocess.PIPE, stderr=log, text=True)
        with PeakMemory(root_pid=proc.pid) as memory:
            stdout, _ = proc.communicate(timeout=timeout_s)
        wall_s, busy_s = time.perf_counter() - started, busy_cpu_seconds() - busy_before
        log.seek(0)
        stderr = log.read()
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{engine}-{verb}.log").write_text(stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} crawl failed ({proc.returncode}):\n{stderr[-3000:]}")
    summary = json.loads(stdout)
    index = summary.get("index") if verb == "build" else None
    summary = summary["crawl"] if verb == "build" else summary
    result: dict[str, object] = {
        "wall_s": round(wall_s, 2),
        "crawl_s": summary["seconds"],
        "links": summary["crawled"],
        "states": summary["states"],
        "requests": summary["requests"],
        "driver_peak_rss_mb": round(memory.root_peak_bytes / 2**20, 1),
        "other_processes_peak_rss_mb": round(memory.children_peak_bytes / 2**20, 1),
        "machine_busy_cpu_s": round(busy_s, 1),
        "machine_busy_share": round(busy_s / wall_s / CORES, 2),  # of all the cores, over the wall time
    }
    if not 0 < busy_s <= wall_s * CORES * 1.05:  # a clock tick of slack
        raise SystemExit(f"{engine} {verb}: {busy_s:.1f} busy CPU-s in {wall_s:.1f} s on {CORES} cores is not a "
                         "measurement of that command")
    if index is not None:
        result.update(index_s=index["seconds"], passages=index["passages"], embedded=index["embedded"])
        embedding = re.search(EMBEDDING_LINE, stderr)
        if embedding:
            phase, model = float(embedding["phase"]), float(embedding["model"])
            result["embedding_phase"] = {"seconds": float(embedding["seconds"]), "cpus": float(embedding["cpus"]),
                                         "passages_per_s_per_cpu": phase, "model_passages_per_s_per_core": model,
                                         "phase_over_model": round(phase / model, 3),
                                         "target_phase_over_model": TARGET_EMBEDDING_SHARE}
    for name, pattern in PHASES.items():
        found = re.search(pattern, stderr)
        if found:
            result[name] = float(found.group(1))
    return result


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLENS_") and k != "RAY_ADDRESS"}
    return {**env, "LINKLENS_PER_HOST_DELAY_S": "0", "LINKLENS_RAY_CPUS": str(CORES),
            "RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def ray_cluster_on_s3(nodes: int) -> Iterator[dict[str, str]]:
    """A Ray cluster of `nodes` nodes on this machine (the cores shared out, each node its own temporary folder)
    and moto's S3 server on 127.0.0.1; yields the environment a `linklens` command needs to run on them."""
    import boto3
    import ray
    from moto.server import ThreadedMotoServer
    from ray.cluster_utils import Cluster

    from cli.engines.ray_runtime import ray_processes_started

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)  # the nodes started below inherit them
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    cpus = max(1, CORES // nodes)
    folders = [Path(tempfile.mkdtemp(prefix=f"lb{i}-")) for i in range(nodes)]  # short: socket paths live there
    try:
        with ray_processes_started():
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": cpus, "include_dashboard": False, "temp_dir": str(folders[0])})
            for folder in folders[1:]:
                cluster.add_node(num_cpus=cpus, temp_dir=str(folder))
        try:
            cluster.wait_for_nodes()
            yield {"RAY_ADDRESS": cluster.address, "LINKLENS_DATASETS_URI": f"s3://{BUCKET}/bench",
                   "LINKLENS_S3_ENDPOINT_URL": endpoint, "LINKLENS_EMBED_ACTORS": str(nodes), **S3_ENV}
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        server.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def same_list(pages: int, hosts: int, latency_ms: float, work: Path, verb: str = "crawl",
              nodes: int = 1, logs: Path | None = None) -> dict[str, object]:
    """Local and Ray crawls (or whole builds) of one fixture-web list, each into a fresh data folder; the Ray one
    on a cluster of `nodes` nodes with its datasets on S3 when `nodes` > 1."""
    articles, label = corpus(pages)
    articles_file = work / "articles.json"
    articles_file.write_text(json.dumps(articles))
    web, info = start_web(articles_file, hosts, latency_ms, work)
    try:
        listing = ["# Bench list", "", "## Articles", ""]
        listing += [f"* [{slug}]({url})" for slug, url in info["article_urls"].items()]
        list_file = work / "list.md"
        list_file.write_text("\n".join(listing) + "\n")
        env = {**base_env(), "LINKLENS_ARCHIVE_URL": info["archive_url"]}
        local = crawl(list_file, work / "local", "local", env, verb=verb, logs=logs)
        if nodes > 1:
            with ray_cluster_on_s3(nodes) as cluster_env:
                ray = crawl(list_file, work / "ray", "ray", {**env, **cluster_env}, verb=verb, logs=logs)
        else:
            ray = crawl(list_file, work / "ray", "ray", env, verb=verb, logs=logs)
    finally:
        web.terminate()
        web.wait(10)
    ratio = float(ray["wall_s"]) / float(local["wall_s"])  # type: ignore[arg-type]
    fixed = float(ray.get("first_outcome_s", 0.0))  # type: ignore[arg-type]
    where = (f"{nodes}-node Ray cluster ({max(1, CORES // nodes)} CPU each), datasets on S3 (moto)"
             if nodes > 1 else f"Ray started in the command ({CORES} CPUs), datasets in its folder")
    return {"command": verb, "corpus": label, "hosts": hosts, "latency_ms": latency_ms, "per_host_delay_s": 0.0,
            "ray_on": where, "local": local, "ray": ray, "ray_vs_local_wall": round(ratio, 2),
            "ray_fixed_overhead_s": round(fixed, 1),
            "ray_vs_local_wall_without_fixed_overhead": round((float(ray["wall_s"]) - fixed)  # type: ignore[arg-type]
                                                              / float(local["wall_s"]), 2),  # type: ignore[arg-type]
            "target_build_ratio": TARGET_BUILD_RATIO,
            # Work, not time: on a machine the engines fill, Ray's wall time cannot fall below its CPU work over the
            # cores, so this floor says what the ratio could be with every core busy throughout.
            "ray_vs_local_cpu_work": round(float(ray["machine_busy_cpu_s"])  # type: ignore[arg-type]
                                           / float(local["machine_busy_cpu_s"]), 2),  # type: ignore[arg-type]
            "ray_vs_local_wall_floor_at_full_cpu": round(float(ray["machine_busy_cpu_s"]) / CORES  # type: ignore[arg-type]
                                                         / float(local["wall_s"]), 2)}  # type: ignore[arg-type]


def scale_url(web: ManyHosts, h: int, p: int) -> str:
    """Link p of host h: the first redirects to a platform, one on every `DEAD_EVERY`-th host is dead."""
    if p == 0:
        return web.redirecting_url(h, h % SCALE_TARGETS, f"page/{h}")
    if p == 1 and h % DEAD_EVERY == 0:
        return f"http://{host_address(h)}:{web.port}/gone/{h}"
    return f"{web.url(h)}/{p}"


def politeness(web: ManyHosts, hosts: int) -> dict[str, object]:
    """The most requests in flight at once per host, as the server saw them, against the configured limit."""
    peak = dict(web.peak)
    targets = {target_address(t): peak.get(target_address(t), 0) for t in range(SCALE_TARGETS)}
    shared = [*targets.values(), peak.get(ARCHIVE_ADDRESS, 0)]
    listed = max(peak.get(host_address(h), 0) for h in range(hosts))
    return {"per_host_concurrency": SCALE_PER_HOST_CONCURRENCY, "listed_hosts_peak": listed,
            "redirect_targets_peak": targets, "archive_peak": peak.get(ARCHIVE_ADDRESS, 0),
            "within_limit": max(listed, *shared) <= SCALE_PER_HOST_CONCURRENCY,
            "limit_reached": min(shared) == SCALE_PER_HOST_CONCURRENCY}


def scale(links: int, hosts: int, work: Path, with_local: bool, latency_ms: float) -> dict[str, object]:
    """`links` links spread evenly over `hosts` loopback hosts, crawled on Ray (and locally, if asked)."""
    per_host = max(1, links // hosts)
    with ManyHosts(latency_s=latency_ms / 1000) as web:
        listing = ["# Many Hosts", "", "## Pages", ""]
        listing += [f"* [Host {h} page {p}]({scale_url(web, h, p)})" for p in range(per_host) for h in range(hosts)]
        list_file = work / "many.md"
        list_file.write_text("\n".join(listing) + "\n")
        env = {**base_env(), "LINKLENS_ARCHIVE_URL": web.archive_url,
               "LINKLENS_PER_HOST_CONCURRENCY": str(SCALE_PER_HOST_CONCURRENCY)}
        dead = len(range(0, hosts, DEAD_EVERY)) if per_host > 1 else 0
        expected = {"redirected": hosts, "archived": dead, "ok": hosts * per_host - hosts - dead}
        result: dict[str, object] = {"links": hosts * per_host, "hosts": hosts, "per_host_delay_s": 0.0,
                                     "latency_ms": latency_ms, "redirect_targets": SCALE_TARGETS,
                                     "expected_states": {k: v for k, v in expected.items() if v},
                                     "cpus": CORES}
        engines = ["ray", "local"] if with_local else ["ray"]
        for engine in engines:
            before = web.requests
            web.peak.clear()
            run = crawl(list_file, work / f"scale-{engine}", engine, env)
            run["server_requests"] = web.requests - before
            run["states_as_expected"] = run["states"] == result["expected_states"]
            run["politeness"] = politeness(web, hosts)
            run["pages_per_s"] = round(int(run["links"]) / float(run["crawl_s"]), 1)  # type: ignore[arg-type]
            if engine == "ray":
                run["pages_per_s_per_cpu"] = round(float(run["pages_per_s"]) / CORES, 1)
                run["target_driver_peak_rss_mb"] = TARGET_DRIVER_PEAK_MB
            result[engine] = run
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--scale-links", type=int, default=20_000)
    parser.add_argument("--scale-hosts", type=int, default=2_000)
    parser.add_argument("--scale-latency-ms", type=float, default=20.0,
                        help="each simulated answer held this long, so requests to one host overlap and can be counted")
    parser.add_argument("--scale-local", action="store_true", help="crawl the simulation locally too")
    parser.add_argument("--no-scale", action="store_true", help="only the same-list comparison")
    parser.add_argument("--no-same-list", action="store_true", help="only the scale simulation")
    parser.add_argument("--build", action="store_true",
                        help="compare whole builds (crawl + index, every passage embedded) instead of crawls")
    parser.add_argument("--nodes", type=int, default=2,
                        help="with --build: Ray nodes on this machine (the cores shared out), datasets on S3 (moto); "
                             "1 = Ray started inside the command")
    parser.add_argument("--logs", type=Path, help="keep each same-list command's stderr in this folder")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "ray_crawl", "cores": CORES}
    with tempfile.TemporaryDirectory(prefix="linklens-bench-ray-") as tmp:
        if not args.no_same_list:
            result["same_list"] = same_list(args.pages, args.hosts, args.latency_ms, Path(tmp),
                                            "build" if args.build else "crawl", args.nodes if args.build else 1,
                                            args.logs)
            if args.out:  # kept even if the longer simulation is stopped
                args.out.write_text(json.dumps(result, indent=2) + "\n")
        if not args.no_scale:
            result["scale"] = scale(args.scale_links, args.scale_hosts, Path(tmp), args.scale_local,
                                    args.scale_latency_ms)
    emit(result, args.out)


if __name__ == "__main__":
    main()
