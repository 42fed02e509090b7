"""Reading a collection into the store: peak memory against the number of lists (they are written one at a time).

    python bench/collection.py [--lists 10,50] [--links 5000] [--out results.json]

Each run is a fresh process (its peak RSS is its own) that syncs `lists` local lists of `links`
distinct links each into a fresh store; reported: seconds, peak RSS (MB), links stored.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(lists: int, links: int) -> dict[str, object]:
    """In this process: write the lists, sync them, report."""
    sys.path.insert(0, str(REPO))
    from ingest.collection import CollectionSpec, sync_collection
    from ingest.settings import load_settings
    from ingest.store import Store

    folder = Path(tempfile.mkdtemp(prefix="linklens-bench-collection-"))
    sources = []
    for n in range(lists):
        path = folder / f"awesome-{n}.md"
        items = "".join(f"* [Article {i} of list {n}](https://site{i % 300}.example.org/{n}/{i}/a-post-title)\n"
                        for i in range(links))
        path.write_text(f"# Awesome {n}\n\n## Reading\n\n{items}")
        sources.append(str(path))
    settings = load_settings(data_dir=folder / "data", max_collection_links=lists * links)
    started = time.perf_counter()
    with Store.open(settings.store_path) as store:
        synced = sync_collection(CollectionSpec.of(sources, []), settings, store)
        stored = sum(store.state_counts().values())
    seconds = time.perf_counter() - started
    assert not synced.skipped, synced.skipped
    return {"lists": lists, "links_per_list": links, "links_stored": stored, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", default="10,50")
    parser.add_argument("--links", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.links)))
        return
    results = []
    for lists in (int(n) for n in args.lists.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(lists), "--links", str(args.links)],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout))
    report = json.dumps({"bench": "collection", "results": results}, indent=2)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
