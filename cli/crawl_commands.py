"""`linklens crawl` and `linklens links`: fetch a collection's articles, report their health.

The crawler is imported inside the commands, so other commands (search) start fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.progress import Progress
from rich.text import Text

from cli.common import err, friendly_errors, out, plain, settings
from cli.link_report import render_links, render_lists
from cli.progress import coloured_states, stage_bars
from ingest.models import LinkState
from ingest.settings import Settings

if TYPE_CHECKING:
    from ingest.collection import CollectionSpec, SkippedList
    from ingest.crawler import CrawlProgress, CrawlSummary
    from ingest.store import Store

LISTS_HELP = ("Markdown lists: file paths, http(s) URLs or github.com/owner/repo links. Together they are the "
              "collection: lists crawled before and not named now are dropped. Default: the collection crawled "
              "last, else the bundled awesome-scalability list.")
LISTS_FROM_HELP = ("A list of lists (an awesome-of-awesome): every list it links to joins the collection "
                   "(github.com/owner/repo links are read from the repository's README). Repeatable.")

class Engine(StrEnum):
    local = "local"
    ray = "ray"


ENGINE_HELP = "Where the work runs: local (this process) or ray (Ray Data; pip install 'linklens[ray]'). " \
              "Default: LINKLENS_ENGINE, else local."
RAY_ADDRESS_HELP = "Ray cluster to join (ray://head:10001 or auto). Default: LINKLENS_RAY_ADDRESS, else " \
                   "RAY_ADDRESS, else a Ray started in this process."


def engine_settings(engine: Engine | None, ray_address: str | None) -> Settings:
    """The settings, with the engine options of `crawl`/`build` (when given) in place of the environment's."""
    cfg = settings()
    chosen = {key: value for key, value in (("engine", engine), ("ray_address", ray_address)) if value is not None}
    return cfg.model_copy(update={k: str(v) for k, v in chosen.items()}) if chosen else cfg


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def crawl_progress_bar() -> Progress:
    return stage_bars()


def progress_updater(bar: Progress) -> Callable[[CrawlProgress], None]:
    task = bar.add_task("crawl", total=None, what="")

    def show(p: CrawlProgress) -> None:
        bar.update(task, completed=p.done, total=p.total, what=coloured_states(p.counts))

    return show


@dataclass
class CollectionCrawl:
    """A crawl of a collection: the crawler's summary and what syncing the lists changed."""

    summary: CrawlSummary
    lists: list[dict[str, object]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    removed_with_dropped: int = 0
    skipped: list[SkippedList] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            **self.summary.as_dict(),
            "lists": self.lists,
            "dropped_lists": self.dropped,
            "skipped_lists": [{"source": s.source, "reason": s.reason} for s in self.skipped],
        }


def chosen_collection(sources: Sequence[str] | None, lists_from: Sequence[str] | None, store: Store) -> CollectionSpec:
    """The lists named, else the collection crawled last (as named then), else the bundled list."""
    from ingest.collection import BUNDLED, CollectionSpec
    from ingest.store import LEGACY_LIST_SOURCE, UNNAMED_LIST_SOURCE

    spec = CollectionSpec.of(sources or [], lists_from or [])
    if not spec.empty:
        return spec
    stored = store.collection_spec()
    if stored is not None:
        return CollectionSpec.from_json(stored)
    held = [str(r["source"]) for r in store.lists(include_dropped=False)
            if r["source"] not in (LEGACY_LIST_SOURCE, UNNAMED_LIST_SOURCE)]
    return CollectionSpec(held) if held else BUNDLED


def run_crawl(sources: Sequence[str] | None, cfg: Settings, refresh: bool, quiet: bool,
              retry_failed: bool = False, lists_from: Sequence[str] | None = None) -> CollectionCrawl:
    """Read the collection's lists, make the store hold exactly them, crawl what is pending.

    Shared by `crawl` and `build`. No list named: the collection crawled last is read again. Under
    the data folder's crawl lock: a second crawl on the same folder stops at once, naming this one.
    """
    from ingest.collection import sync_collection
    from ingest.crawler import Crawler
    from ingest.folder_lock import crawl_lock
    from ingest.store import Store

    with crawl_lock(cfg.data_dir), Store.open(cfg.store_path) as store:
        synced = sync_collection(chosen_collection(sources, lists_from, store), cfg, store)
        report = [{"name": x.name, "source": x.source, "links": x.links, "new": x.sync.added,
                   "removed": x.sync.removed} for x in synced.lists]
        for skipped in synced.skipped:
            err.print(Text("skipped", style="yellow"), plain(f"{skipped.source}: {skipped.reason}"))
        if not quiet:
            for line in report:
                changes = f"{line['new']} new" + (f", {line['removed']} no longer listed" if line["removed"] else "")
                err.print(plain(f"{line['name']} ({line['source']}): {line['links']} links ({changes})"))
            for name in synced.dropped:
                err.print(plain(f"dropped {name} from the collection (not named by this command)"))
            if synced.dropped:
                err.print(f"{synced.removed} links no list of the collection cites are now `removed`")
            count = len(synced.lists)
            err.print(f"{count} list{'' if count == 1 else 's'} → {cfg.store_path}")
        if cfg.engine == Engine.ray:
            summary = crawl_on_ray(cfg, store, refresh, retry_failed, quiet)
        elif quiet:
            summary = Crawler(cfg, store).run(refresh=refresh, retry_failed=retry_failed)
        else:
            with crawl_progress_bar() as bar:
                summary = Crawler(cfg, store).run(refresh=refresh, retry_failed=retry_failed,
                                                  progress=progress_updater(bar))
        store.mark_lists_crawled(x.sync.list_id for x in synced.lists)
    return CollectionCrawl(summary, report, synced.dropped, synced.removed, synced.skipped)


def crawl_on_ray(cfg: Settings, store: Store, refresh: bool, retry_failed: bool, quiet: bool) -> CrawlSummary:
    """The Ray engine's crawl (cli/engines/ray_crawl.py); its modules import Ray, so they load only here."""
    from cli.engines.ray_runtime import import_ray

    import_ray()  # without the extra: the one-sentence hint, not an ImportError
    from cli.engines.ray_crawl import run_ray_crawl

    return run_ray_crawl(cfg, store, refresh=refresh, retry_failed=retry_failed, quiet=quiet)


def run_reextract(cfg: Settings, quiet: bool) -> int:
    from ingest.crawler import Crawler
    from ingest.folder_lock import crawl_lock
    from ingest.store import Store

    with crawl_lock(cfg.data_dir), Store.open(cfg.store_path) as store:
        crawler = Crawler(cfg, store)
        if quiet:
            return crawler.reextract()
        with crawl_progress_bar() as bar:
            return crawler.reextract(progress=progress_updater(bar))


def print_summary(crawl: CollectionCrawl) -> None:
    summary = crawl.summary
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    err.print(f"crawled {summary.crawled} links in {summary.seconds:.1f}s ({summary.requests} requests): {states}")
    if summary.crawled == 0:
        err.print("nothing pending — every link already has a final state (use --retry-failed to try failed "
                  "links again, --refresh to re-check them all)")
    elif not summary.fetched_anything:
        err.print("[yellow]nothing could be fetched[/yellow] — is the network down? The links stay searchable "
                  "by their list titles; run the same command again once you are online.")
    if crawl.skipped:
        err.print(f"[yellow]{len(crawl.skipped)} lists skipped[/yellow] (see above) — the other lists were crawled")


@friendly_errors
def crawl(
    sources: list[str] = typer.Argument(None, metavar="[LIST]...", help=LISTS_HELP, show_default=False),
    lists_from: list[str] = typer.Option(None, "--lists-from", metavar="LIST", help=LISTS_FROM_HELP),
    refresh: bool = typer.Option(False, "--refresh", help="Re-check every link (conditional requests keep "
                                                          "unchanged pages)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary instead of a progress bar."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try the links that ended `failed` again."),
    reextract: bool = typer.Option(False, "--reextract", help="Extract the stored pages again; fetches nothing."),
    engine: Engine = typer.Option(None, "--engine", help=ENGINE_HELP, case_sensitive=False),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Fetch and extract every link of a collection of lists; resumes where a killed crawl stopped.

    Examples: linklens crawl ./README.md
              linklens crawl a.md https://github.com/owner/awesome-b
              linklens crawl --lists-from https://github.com/owner/awesome-awesome
              linklens crawl ./README.md --engine ray
    """
    if reextract:
        count = run_reextract(settings(), quiet=as_json)
        if as_json:
            out.print_json(json.dumps({"reextracted": count}))
        else:
            err.print(f"extracted {count} stored pages again (no requests made) — run: linklens index")
        return
    crawled = run_crawl(sources, engine_settings(engine, ray_address), refresh=refresh, quiet=as_json,
                        retry_failed=retry_failed, lists_from=lists_from)
    if as_json:
        out.print_json(json.dumps(crawled.as_dict()))
    else:
        print_summary(crawled)


@friendly_errors
def links(
    state: LinkState = typer.Option(None, "--state", help="Only links in this state.", case_sensitive=False),
    list_name: str = typer.Option(None, "--list", "-l", help="Only the links of this list (see linklens lists)."),
    fmt: ReportFormat = typer.Option(
        ReportFormat.table, "--format", "-f",
        help="table, json, or markdown (for list maintainers: dead links with archived replacements).",
    ),
) -> None:
    """The link-health report: every link's final state and why.

    Examples: linklens links --state dead --format markdown
              linklens links --list awesome-scalability --format markdown   (the report for that list's maintainer)
    """
    from ingest.store import Store

    cfg = settings()
    with Store.open(cfg.store_path) as store:
        chosen = store.list_named(list_name) if list_name is not None else None
        list_id = None if chosen is None else chosen["id"]
        assert list_id is None or isinstance(list_id, int)
        rows = store.link_rows(state, list_id=list_id)
        if not rows and store.state_counts() == {}:
            err.print("no links yet — run: linklens crawl")
            raise typer.Exit(1)
    render_links(rows, fmt.value, chosen)


@friendly_errors
def lists(
    as_json: bool = typer.Option(False, "--json", help="Print the lists as JSON."),
    dropped: bool = typer.Option(False, "--dropped", help="Also the lists dropped from the collection."),
) -> None:
    """The lists of the collection: where each comes from, its links, their states, when it was crawled.

    Example: linklens lists
    """
    from ingest.store import Store

    cfg = settings()
    with Store.open(cfg.store_path) as store:
        rows = [list_summary(r) for r in store.lists(include_dropped=dropped)]
    render_lists(rows, as_json)


def list_summary(row: dict[str, object]) -> dict[str, object]:
    """One list as `linklens lists --json` prints it."""
    return {"name": row["name"], "url": row["source"], "links": row["links"], "states": row["states"],
            "crawled_at": _iso(row["crawled_at"]), "dropped_at": _iso(row["dropped_at"])}


def _iso(stamp: object) -> str | None:
    if not isinstance(stamp, int | float):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
