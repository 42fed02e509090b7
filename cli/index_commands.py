"""`linklens index`, `build`, `search` and `eval`: the index stage from the terminal.

Heavy modules (the crawler, torch for building) are imported inside the commands
that need them, so `linklens search` starts in well under a second and never
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.common import err, friendly_errors, out, settings
from ingest.errors import SourceError
from ingest.settings import Settings

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


@friendly_errors
def index(
    rebuild: bool = typer.Option(False, "--rebuild", help="Ignore the embedding cache and re-embed everything."),
    kind: str = typer.Option(
        None, "--kind", help="Dense index: flat (exact), hnsw, ivf (memory-lean) or auto (by size: LINKLENS_INDEX_KIND)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
) -> None:
    """Build a new index snapshot from what was crawled; only new or changed passages are embedded.

    Example: linklens index            (or: linklens index --kind hnsw)
    """
    if kind is not None and kind not in INDEX_KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r} — use one of: {', '.join(INDEX_KINDS)}", param_hint="--kind")
    report = run_index(settings(), rebuild, quiet=as_json, kind=None if kind in (None, "auto") else kind)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        print_build(report)


@friendly_errors
def build(
    source: str = typer.Argument(None, help="Markdown list (file or http(s) URL). Default: the bundled list."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-check every link before indexing."),
    as_json: bool = typer.Option(False, "--json", help="Print crawl and index reports as JSON."),
) -> None:
    """Crawl a list and index it: the whole pipeline in one command.

    Example: linklens build && linklens search "how to avoid hot shards"
    """
    from cli.crawl_commands import print_summary, run_crawl

    cfg = settings()
    summary = run_crawl(source, cfg, refresh=refresh, quiet=as_json)
    if not as_json:
        print_summary(summary)
    report = run_index(cfg, rebuild=False, quiet=as_json)
    if as_json:
        out.print_json(json.dumps({"crawl": summary.as_dict(), "index": report}))
    else:
        print_build(report)
        err.print('ready — try: linklens search "how to avoid hot shards"   or: linklens serve')


@friendly_errors
def search(
    query: str = typer.Argument(..., help="A question or keywords."),
    k: int = typer.Option(10, "--k", "-k", help="How many articles (1-50)."),
    section: str = typer.Option(None, "--section", "-s", help="Only this list section (e.g. Scalability)."),
    host: str = typer.Option(None, "--host", help="Only articles from this site (e.g. highscalability.com)."),
    mode: str = typer.Option(None, "--mode", help="hybrid (default), dense or bm25."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly the HTTP API's JSON response."),
) -> None:
    """Ask a question; get the best articles, ranked, with the passage that answers.

    Example: linklens search "how to avoid hot shards" --k 5
    """
    from index.search import Searcher

    searcher = Searcher.open(settings())
    try:
        response = searcher.search(query, k=k, section=section, host=host, mode=mode)
    finally:
        searcher.close()
    if as_json:
        out.print_json(json.dumps(response.to_dict()))
        return
    if not response.results:
        err.print("no matching articles — try other words, or drop --section/--host")
        return
    out.print(results_table(response.to_dict()))
    err.print(f"{len(response.results)} results in {response.took_ms:.1f} ms")


def results_table(response: dict[str, object]) -> Table:
    table = Table(show_lines=True, header_style="bold", expand=True)
    table.add_column("#", justify="right", width=3)
    table.add_column("article", ratio=2, overflow="fold")
    table.add_column("passage", ratio=3, overflow="fold")
    for r in response["results"]:  # type: ignore[attr-defined]
        head = Text(r["title"], style="bold")
        head.append(f"\n{r['url']}", style="cyan")
        head.append(f"\n{r['section']} · {r['host']} · {r['score']:.4f}", style="dim")
        if r["archived_url"]:
            head.append(f"\narchived: {r['archived_url']}", style="yellow")
        table.add_row(str(r["rank"]), head, marked(r["snippet"]))
    return table


def marked(snippet: str) -> Text:
    """The API marks query terms as **term**; show them bold in the terminal."""
    text = Text()
    for i, part in enumerate(snippet.split(BOLD_MARK)):
        text.append(part, style="bold yellow" if i % 2 else "")
    return text


@friendly_errors
def eval(  # noqa: A001 - the command is called eval
    queries: Path = typer.Argument(..., help='JSON Lines: {"query": ..., "relevant": {"<url>": 2 or 1}}'),
    k: int = typer.Option(10, "--k", help="Cut-off for nDCG, Recall and MRR."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Relevance of dense-only, BM25-only and hybrid search on judged queries, side by side.

    Example: linklens eval judged.jsonl
    """
    from index.evaluate import evaluate as run_eval
    from index.evaluate import load_judgements
    from index.search import Searcher

    judged = load_judgements(queries)
    searcher = Searcher.open(settings())
    try:
        metrics = run_eval(searcher, judged, k=k)
    finally:
        searcher.close()
    if as_json:
        out.print_json(json.dumps({"queries": len(judged), "k": k, "metrics": metrics}))
        return
    table = Table(title=f"{len(judged)} judged queries", header_style="bold")
    table.add_column("mode")
    names = list(next(iter(metrics.values())))
    for name in names:
        table.add_column(name, justify="right")
    for mode, values in metrics.items():
        table.add_row(mode, *(f"{values[n]:.3f}" for n in names))
    out.print(table)
