"""`linklens index`, `build`, `search` and `eval`: the index stage from the terminal.

Heavy modules (the crawler, torch for building) are imported inside the commands
that need them, so `linklens search` starts in well under a second and never
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.common import err, friendly_errors, out, plain, settings, shown
from cli.crawl_commands import ENGINE_HELP, RAY_ADDRESS_HELP, Engine, engine_settings
from index.limits import DEFAULT_K, MAX_K, MIN_K
from ingest.errors import BadQueryError, SourceError
from ingest.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cli.crawl_commands import CollectionCrawl

BOLD_MARK = "**"


def run_index(cfg: Settings, rebuild: bool, quiet: bool = False, kind: str | None = None) -> dict[str, object]:
    """Build a snapshot from the page store, with a progress bar over the articles."""
    from dataclasses import asdict

    from index.build import build_index
    from ingest.store import Store

    if not cfg.store_path.exists():
        raise SourceError(f"nothing crawled yet in {cfg.data_dir} — run: linklens build (or linklens crawl first)")
    with Store.open(cfg.store_path) as store:
        if quiet:
            report = build_index(cfg, store, rebuild=rebuild, kind=kind)
        else:
            with Progress(TextColumn("[bold]index"), BarColumn(), MofNCompleteColumn(), TextColumn("articles"),
                          TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("index", total=None)
                report = build_index(cfg, store, rebuild=rebuild, kind=kind,
                                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    return asdict(report)


def print_build(report: dict[str, object]) -> None:
    err.print(
        f"snapshot {report['snapshot_id']}: {report['articles']} articles ({report['documents']} with text), "
        f"{report['passages']} passages — {report['embedded']} embedded, {report['cached']} from cache — "
        f"{report['index_kind']} index, {report['seconds']}s"
    )


INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")


def run_index_with(cfg: Settings, rebuild: bool, quiet: bool = False, kind: str | None = None) -> dict[str, object]:
    """The index stage on the engine `cfg` names; both return the same report."""
    if cfg.engine == Engine.ray:
        from cli.engines.ray_index import run_ray_index

        return run_ray_index(cfg, rebuild, quiet=quiet, kind=kind)
    return run_index(cfg, rebuild, quiet=quiet, kind=kind)


@friendly_errors
def index(
    rebuild: bool = typer.Option(False, "--rebuild", help="Ignore the embedding cache and re-embed everything."),
    kind: str = typer.Option(
        None, "--kind", help="Dense index: flat (exact), hnsw, ivf (memory-lean) or auto (by size: LINKLENS_INDEX_KIND)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
    engine: Engine = typer.Option(None, "--engine", help=ENGINE_HELP, case_sensitive=False),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Build a new index snapshot from what was crawled; only new or changed passages are embedded.

    Example: linklens index            (or: linklens index --kind hnsw,  linklens index --engine ray)
    """
    if kind is not None and kind not in INDEX_KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r} — use one of: {', '.join(INDEX_KINDS)}", param_hint="--kind")
    chosen_kind = None if kind in (None, "auto") else kind
    report = run_index_with(engine_settings(engine, ray_address), rebuild, quiet=as_json, kind=chosen_kind)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        print_build(report)


@friendly_errors
def build(
    sources: list[str] = typer.Argument(None, metavar="[LIST]...", help="Markdown lists (files, http(s) URLs, "
                                        "github.com/owner/repo); together the collection. Default: the collection "
                                        "crawled last, else the bundled list.", show_default=False),
    lists_from: list[str] = typer.Option(None, "--lists-from", metavar="LIST",
                                         help="A list of lists: every list it links to joins the collection."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-check every link before indexing."),
    as_json: bool = typer.Option(False, "--json", help="Print crawl and index reports as JSON."),
    engine: Engine = typer.Option(None, "--engine", help=ENGINE_HELP, case_sensitive=False),
    ray_address: str = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Crawl a collection of lists and index it: the whole pipeline in one command.

    Examples: linklens build && linklens search "how to avoid hot shards"
              linklens build a.md b.md        linklens build --lists-from awesome-awesome.md
              linklens build --engine ray     (both stages on Ray Data; see README "Scaling out with Ray")
    """
    from cli.crawl_commands import print_summary, run_crawl

    cfg = engine_settings(engine, ray_address)
    if cfg.engine == Engine.ray:
        crawled, report = build_on_ray(sources, lists_from, cfg, refresh=refresh, quiet=as_json)
    else:
        crawled = run_crawl(sources, cfg, refresh=refresh, quiet=as_json, lists_from=lists_from)
        if not as_json:
            print_summary(crawled)
        report = run_index(cfg, rebuild=False, quiet=as_json)
    if as_json:
        out.print_json(json.dumps({"crawl": crawled.as_dict(), "index": report}))
    else:
        print_build(report)
        err.print('ready — try: linklens search "how to avoid hot shards"   or: linklens serve')


def build_on_ray(sources: Sequence[str] | None, lists_from: Sequence[str] | None, cfg: Settings, refresh: bool,
                 quiet: bool) -> tuple[CollectionCrawl, dict[str, object]]:
    """`build --engine ray`: crawl and index in one Ray session (started or joined once, not per stage)."""
    from cli.crawl_commands import print_summary, run_crawl
    from cli.engines.ray_runtime import import_ray, ray_session

    import_ray()  # without the extra: the one-sentence hint, not an ImportError
    from cli.engines.ray_index import run_ray_index

    with ray_session(cfg):
        crawled = run_crawl(sources, cfg, refresh=refresh, quiet=quiet, lists_from=lists_from)
        if not quiet:
            print_summary(crawled)
        return crawled, run_ray_index(cfg, rebuild=False, quiet=quiet, kind=None, export=False)  # the crawl exported


@friendly_errors
def search(
    query: str = typer.Argument(..., help="A question or keywords."),
    k: int = typer.Option(DEFAULT_K, "--k", "-k", min=MIN_K, max=MAX_K, help="How many articles."),
    section: list[str] = typer.Option(  # noqa: B008 - typer's way to declare a repeated option
        None, "--section", "-s",
        help="Only this list section: one heading per option, top first (--section 'CI / CD' is that one heading; "
             "--section Scalability --section Sharding its subsection). See GET /sections.",
    ),
    host: str = typer.Option(None, "--host", help="Only articles from this site (e.g. highscalability.com)."),
    list_name: str = typer.Option(None, "--list", "-l", help="Only articles cited by this list (see linklens lists)."),
    mode: str = typer.Option(None, "--mode", help="hybrid (default), dense or bm25."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly the HTTP API's JSON response."),
) -> None:
    """Ask a question; get the best articles, ranked, with the passage that answers.

    Example: linklens search "how to avoid hot shards" --k 5
    """
    from index.search import Searcher

    searcher = Searcher.open(settings())
    try:
        response = searcher.search(query, k=k, section=section or None, host=host, mode=mode, list_name=list_name)
    finally:
        searcher.close()
    if as_json:
        out.print_json(json.dumps(response.to_dict()))
        return
    if not response.results:
        err.print("no matching articles — try other words, or drop --section/--host/--list")
        return
    out.print(results_table(response.to_dict()))
    err.print(f"{len(response.results)} results in {response.took_ms:.1f} ms")


def results_table(response: dict[str, object]) -> Table:
    table = Table(show_lines=True, header_style="bold", expand=True)
    table.add_column("#", justify="right", width=3)
    table.add_column("article", ratio=2, overflow="fold")
    table.add_column("passage", ratio=3, overflow="fold")
    for r in response["results"]:  # type: ignore[attr-defined]
        head = plain(r["title"], style="bold")
        head.append(shown(f"\n{r['url']}"), style="cyan")
        head.append(shown(f"\n{r['section']} · {r['host']} · {r['score']:.4f}"), style="dim")
        if r.get("lists"):
            head.append(shown(f"\nlists: {', '.join(r['lists'])}"), style="dim")
        if r["archived_url"]:
            head.append(shown(f"\narchived: {r['archived_url']}"), style="yellow")
        table.add_row(str(r["rank"]), head, marked(r["snippet"]))
    return table


def marked(snippet: str) -> Text:
    """The API marks query terms as **term**; show them bold in the terminal."""
    text = Text()
    for i, part in enumerate(snippet.split(BOLD_MARK)):
        text.append(shown(part), style="bold yellow" if i % 2 else "")
    return text


@friendly_errors
def eval(  # noqa: A001 - the command is called eval
    queries: Path = typer.Argument(..., help='JSON Lines: {"query": ..., "relevant": {"<url>": 2 or 1}}'),
    k: int = typer.Option(
        DEFAULT_K, "--k", min=MIN_K, max=MAX_K,
        help="Cut-off for nDCG, Recall and MRR (Recall@50 is always reported too).",
    ),
    modes: list[str] = typer.Option(None, "--mode", help="Only this mode (repeatable): dense, bm25, hybrid."),
    split: str = typer.Option(None, "--split", help="Only the judged queries of this split (dev or test)."),
    compare: tuple[str, str] | None = typer.Option(
        None, "--compare", metavar="BASELINE CANDIDATE",
        help="Paired comparison of two configurations, each a mode or a run file saved with --save-run "
        "(FILE or FILE#label).",
    ),
    save_run: Path = typer.Option(None, "--save-run", help="Save what each mode returned, to --compare later."),
    url_template: str = typer.Option(
        None, "--url-template", help="Judgements name article ids; turn them into URLs, e.g. https://site/{id}"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Relevance of search modes on judged queries, with 95% bootstrap intervals, per section and kind.

    Examples: linklens eval judged.jsonl --split dev
              linklens eval judged.jsonl --mode hybrid --save-run before.json
              linklens eval judged.jsonl --compare before.json hybrid
    """
    from index.eval_stats import compare as compare_runs
    from index.eval_stats import summarise
    from index.evaluate import (
        EVAL_MODES,
        load_judgements,
        only_split,
        rank_queries,
        resolve_run,
        save_runs,
        warn_unknown_urls,
    )
    from index.search import Searcher

    judged = only_split(load_judgements(queries, url_template), split)
    opened: list[Searcher] = []

    def searcher() -> Searcher:
        if not opened:
            opened.append(Searcher.open(settings()))
            warn_unknown_urls(opened[0].urls(), judged)
        return opened[0]

    try:
        if compare is not None:
            if compare[0] == compare[1]:
                raise BadQueryError(f"--compare needs two different configurations, got {compare[0]!r} twice")
            (label_a, run_a), (label_b, run_b) = (resolve_run(spec, judged, k, searcher) for spec in compare)
            report = compare_runs(judged, run_a, run_b, k, (label_a, label_b))
            runs = {label_a: run_a, label_b: run_b}
        else:
            chosen = list(modes) if modes else list(EVAL_MODES)
            unknown = [m for m in chosen if m not in EVAL_MODES]
            if unknown:
                raise BadQueryError(f"unknown mode {unknown[0]!r} — use one of: {', '.join(EVAL_MODES)}")
            runs = {mode: rank_queries(searcher(), judged, mode, k) for mode in chosen}
            report = summarise(judged, runs, k)
        if save_run is not None:
            about: dict[str, object] = {"judgements": str(queries), "split": split}
            if opened:
                about.update(snapshot=opened[0].stats(), settings=_search_settings())
            save_runs(save_run, runs, k, about)
            err.print(f"saved {len(runs)} runs to {save_run}")
    finally:
        for s in opened:
            s.close()
    if as_json:
        out.print_json(json.dumps(report))
    elif compare is not None:
        print_comparison(report)
    else:
        print_summary(report, split)


def _search_settings() -> dict[str, object]:
    """The settings a run depends on, recorded in saved runs."""
    cfg = settings()
    names = (
        "model", "passage_words", "passage_overlap_words", "passage_headings", "candidates", "rrf_k", "fusion",
        "dense_weight",
    )  # fmt: skip
    return {name: getattr(cfg, name) for name in names}


def _cell(interval: dict[str, float]) -> str:
    return f"{interval['mean']:.3f} [{interval['low']:.3f}–{interval['high']:.3f}]"


def print_summary(report: dict[str, object], split: str | None) -> None:
    configurations: dict[str, dict] = report["configurations"]  # type: ignore[assignment]
    where = f" ({split})" if split else ""
    table = Table(title=f"{report['queries']} judged queries{where} · mean [95% bootstrap interval]",
                  header_style="bold")
    table.add_column("mode")
    names = list(next(iter(configurations.values()))["metrics"])
    for name in names:
        table.add_column(name, justify="right")
    for label, entry in configurations.items():
        table.add_row(label, *(_cell(entry["metrics"][n]) for n in names))
    out.print(table)
    primary = names[0]
    for field in ("section", "kind"):
        key = f"by_{field}"
        first = next(iter(configurations.values()))
        if key not in first:
            continue
        by = Table(title=f"{primary} by {field}", header_style="bold")
        by.add_column(field)
        by.add_column("queries", justify="right")
        for label in configurations:
            by.add_column(label, justify="right")
        for value, group in first[key].items():
            by.add_row(plain(value), str(group["queries"]),
                       *(_cell(entry[key][value][primary]) for entry in configurations.values()))
        out.print(by)


def print_comparison(report: dict[str, object], shown: int = 10) -> None:
    a, b = str(report["baseline"]), str(report["candidate"])
    metrics: dict[str, dict] = report["metrics"]  # type: ignore[assignment]
    table = Table(title=f"candidate {b} against baseline {a}, {report['queries']} queries, "
                        "difference with its paired 95% bootstrap interval", header_style="bold")
    for column in ("metric", "baseline", "candidate", "difference [95%]", "beyond noise", "better/worse/same"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, m in metrics.items():
        d = m["difference"]
        table.add_row(name, f"{m[a]:.3f}", f"{m[b]:.3f}", f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]",
                      "yes" if m["beyond_noise"] else "no", f"{m['better']}/{m['worse']}/{m['same']}")
    out.print(table)
    primary = str(report["primary"])
    for title, rows in (("better", report["better"]), ("worse", report["worse"])):
        rows = list(rows)  # type: ignore[call-overload]
        if not rows:
            continue
        changed = Table(title=f"{primary}: {len(rows)} queries {title} (largest first, {min(shown, len(rows))} shown)",
                        header_style="bold")
        for column in ("query", "baseline", "candidate"):
            changed.add_column(column, justify="left" if column == "query" else "right")
        for row in rows[:shown]:
            changed.add_row(plain(row["text"]), f"{row[a]:.3f}", f"{row[b]:.3f}")
        out.print(changed)
    for field in ("section", "kind"):
        groups = report.get(f"by_{field}")
        if not groups:
            continue
        by = Table(title=f"{primary} difference by {field}", header_style="bold")
        for column in (field, "queries", "difference", "interval"):
            by.add_column(column, justify="left" if column == field else "right")
        for value, g in groups.items():  # type: ignore[attr-defined]
            d = g["difference"]
            by.add_row(plain(value), str(g["queries"]), f"{d['mean']:+.3f}", f"[{d['low']:+.3f}, {d['high']:+.3f}]")
        out.print(by)
