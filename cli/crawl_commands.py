"""`linklens crawl` and `linklens links`: fetch a list's articles, report their health.

The crawler is imported inside the commands, so other commands (search) start fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.common import err, friendly_errors, out, settings
from cli.link_report import render_links
from ingest.models import LinkState
from ingest.settings import Settings

if TYPE_CHECKING:
    from ingest.crawler import CrawlProgress, CrawlSummary
    from ingest.store import Store

STATE_COLOURS = {"ok": "green", "redirected": "cyan", "archived": "yellow", "dead": "red", "blocked": "magenta",
                 "unsupported": "bright_black", "failed": "red", "removed": "bright_black", "pending": "white"}


class Engine(StrEnum):
    local = "local"
    ray = "ray"


ENGINE_HELP = "Where the crawl runs: local (this process) or ray (Ray Data; pip install 'linklens[ray]'). " \
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
    return Progress(
        TextColumn("[bold]crawl"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("{task.fields[states]}"), console=err, transient=False,
    )


def progress_updater(bar: Progress) -> Callable[[CrawlProgress], None]:
    task = bar.add_task("crawl", total=None, rate="", states="")

    def show(p: CrawlProgress) -> None:
        states = " ".join(f"[{STATE_COLOURS.get(k, 'white')}]{k}[/] {v}" for k, v in sorted(p.counts.items()))
        bar.update(task, completed=p.done, total=p.total, rate=f"{p.pages_per_s:.1f} pages/s", states=states)

    return show


def run_crawl(source: str | None, cfg: Settings, refresh: bool, quiet: bool,
              retry_failed: bool = False) -> CrawlSummary:
    """Read the list, sync its links into the store, crawl what is pending. Shared by `crawl` and `build`."""
    from ingest.crawler import Crawler
    from ingest.sources import load_list
    from ingest.store import Store

    link_list = load_list(source, cfg)
    with Store.open(cfg.store_path) as store:
        synced = store.sync_list(link_list.key, link_list.name, link_list.links)
        if not quiet:
            changes = f"{synced.added} new" + (f", {synced.removed} no longer listed" if synced.removed else "")
            err.print(f"{link_list.source}: {len(link_list.links)} links ({changes}) → {cfg.store_path}")
        if cfg.engine == Engine.ray:
            return crawl_on_ray(cfg, store, synced.list_id, refresh, retry_failed, quiet)
        crawler = Crawler(cfg, store, list_id=synced.list_id)
        if quiet:
            return crawler.run(refresh=refresh, retry_failed=retry_failed)
        with crawl_progress_bar() as bar:
            return crawler.run(refresh=refresh, retry_failed=retry_failed, progress=progress_updater(bar))


def crawl_on_ray(cfg: Settings, store: Store, list_id: int, refresh: bool, retry_failed: bool,
                 quiet: bool) -> CrawlSummary:
    """The Ray engine's crawl (cli/engines/ray_crawl.py); its modules import Ray, so they load only here."""
    from cli.engines.ray_runtime import import_ray

    import_ray()  # without the extra: the one-sentence hint, not an ImportError
    from cli.engines.ray_crawl import run_ray_crawl

    return run_ray_crawl(cfg, store, list_id, refresh=refresh, retry_failed=retry_failed, quiet=quiet)


def run_reextract(cfg: Settings, quiet: bool) -> int:
    from ingest.crawler import Crawler
    from ingest.store import Store

    with Store.open(cfg.store_path) as store:
        crawler = Crawler(cfg, store)
        if quiet:
            return crawler.reextract()
        with crawl_progress_bar() as bar:
            return crawler.reextract(progress=progress_updater(bar))


def print_summary(summary: CrawlSummary) -> None:
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    err.print(f"crawled {summary.crawled} links in {summary.seconds:.1f}s ({summary.requests} requests): {states}")
    if summary.crawled == 0:
        err.print("nothing pending — every link already has a final state (use --retry-failed to try failed "
                  "links again, --refresh to re-check them all)")
    elif not summary.fetched_anything:
        err.print("[yellow]nothing could be fetched[/yellow] — is the network down? The links stay searchable "
                  "by their list titles; run the same command again once you are online.")


@friendly_errors
def crawl(
    source: str = typer.Argument(None, help="Markdown list: a file path or an http(s) URL. Default: the bundled "
                                            "awesome-scalability list."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-check every link (conditional requests keep "
                                                          "unchanged pages)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary instead of a progress bar."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try the links that ended `failed` again."),
    reextract: bool = typer.Option(False, "--reextract", help="Extract the stored pages again; fetches nothing."),
    engine: Engine = typer.Option(None, "--engine", help=ENGINE_HELP, case_sensitive=False),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Fetch and extract every link of a list; resumes where a killed crawl stopped.

    Example: linklens crawl ./README.md      (on Ray: linklens crawl ./README.md --engine ray)
    """
    if reextract:
        count = run_reextract(settings(), quiet=as_json)
        if as_json:
            out.print_json(json.dumps({"reextracted": count}))
        else:
            err.print(f"extracted {count} stored pages again (no requests made) — run: linklens index")
        return
    cfg = engine_settings(engine, ray_address)
    summary = run_crawl(source, cfg, refresh=refresh, quiet=as_json, retry_failed=retry_failed)
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
    else:
        print_summary(summary)


@friendly_errors
def links(
    state: LinkState = typer.Option(None, "--state", help="Only links in this state.", case_sensitive=False),
    fmt: ReportFormat = typer.Option(
        ReportFormat.table, "--format", "-f",
        help="table, json, or markdown (for list maintainers: dead links with archived replacements).",
    ),
) -> None:
    """The link-health report: every link's final state and why.

    Example: linklens links --state dead --format markdown
    """
    from ingest.store import Store

    cfg = settings()
    with Store.open(cfg.store_path) as store:
        rows = store.link_rows(state)
        if not rows and store.state_counts() == {}:
            err.print("no links yet — run: linklens crawl")
            raise typer.Exit(1)
    render_links(rows, fmt.value)
