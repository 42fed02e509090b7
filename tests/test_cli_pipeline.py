"""The whole pipeline through the `linklens` command: crawl the fixture web, index, search, eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cli.main import app
from index.limits import MAX_K, MIN_K
from ingest.settings import load_settings
from tests.conftest import CrawledWeb
from tests.index_fixtures import BuiltIndex, seed_caches

pytest_plugins = ["tests.index_fixtures"]  # the session index: built

runner = CliRunner()
RESULT_KEYS = {"rank", "url", "title", "section", "section_path", "lists", "host", "score", "snippet", "archived_url"}


def linklens(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """A real process, as a user runs it."""
    import os

    env = dict(os.environ, LINKLENS_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def in_process(*args: str, data_dir: Path) -> Result:
    """The same command run in this process: for what a command answers, where a real process adds only its
    start-up (each command keeps a real-process test above or below: search, index, eval)."""
    return runner.invoke(app, list(args), env={"LINKLENS_DATA_DIR": str(data_dir)})


def handled(result: Result) -> bool:
    """The command ended by its own exit (what a real process shows as a message), not by an exception that
    would have been a traceback."""
    return isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def indexed(crawled: CrawledWeb, built: BuiltIndex) -> CrawledWeb:
    """The crawled fixture web, indexed through `linklens index` (caches seeded: only new text is embedded)."""
    seed_caches(built.settings, crawled.settings)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINKLENS_DATA_DIR", str(crawled.settings.data_dir))
        result = runner.invoke(app, ["index", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["articles"] == len(crawled.report)
    assert report["query_encoder"] == "onnx"
    return crawled


def test_search_before_any_build_names_the_command(data_dir: Path) -> None:
    proc = linklens("search", "hot shards", data_dir=data_dir)
    assert proc.returncode == 1
    assert "linklens build" in proc.stderr and "Traceback" not in proc.stderr


def test_search_json_has_the_http_shape_and_finds_the_answer(indexed: CrawledWeb) -> None:
    proc = linklens("search", "how to avoid hot shards", "--k", "5", "--json", data_dir=indexed.settings.data_dir)
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)
    assert set(response) == {"query", "took_ms", "results"}
    assert response["query"] == "how to avoid hot shards"
    assert len(response["results"]) == 5
    assert all(set(r) == RESULT_KEYS for r in response["results"])
    assert [r["rank"] for r in response["results"]] == [1, 2, 3, 4, 5]
    top = response["results"][0]
    assert top["url"].endswith("/posts/hot-shards-key-salting")
    assert "**" in top["snippet"]


def test_search_finds_text_recovered_from_the_archive(indexed: CrawledWeb) -> None:
    archived = next(f for f in indexed.web.faults() if f.state == "archived")
    assert archived.article is not None
    question = archived.article.paragraphs[0].split(".")[0]
    result = in_process("search", question, "--json", data_dir=indexed.settings.data_dir)
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["results"][0]
    assert top["archived_url"] and top["archived_url"].startswith(indexed.web.archive_url)


def test_section_filter_keeps_only_that_section(indexed: CrawledWeb) -> None:
    result = in_process("search", "caching", "--section", "faults", "--json", data_dir=indexed.settings.data_dir)
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert results and all(r["section"] == "Faults" for r in results)


def test_search_table_for_people(indexed: CrawledWeb) -> None:
    table = in_process("search", "token bucket rate limiting", data_dir=indexed.settings.data_dir)
    assert table.exit_code == 0, table.output
    assert "Fair Share for Every API Key" in table.stdout
    assert "results in" in table.stderr


def test_unknown_section_and_bad_k_are_one_sentence(indexed: CrawledWeb) -> None:
    unknown = in_process("search", "caching", "--section", "Nonsense", data_dir=indexed.settings.data_dir)
    assert unknown.exit_code == 1, unknown.output
    assert handled(unknown) and unknown.stderr.startswith("error: "), unknown.output
    for k in (MIN_K - 1, MAX_K + 1, 500):
        bad_k = in_process("search", "caching", "--k", str(k), data_dir=indexed.settings.data_dir)
        assert bad_k.exit_code == 2, (k, bad_k.output)  # a usage error, caught before the index is opened
        assert f"{MIN_K}<=x<={MAX_K}" in bad_k.stderr and handled(bad_k)


def test_eval_reports_three_modes(indexed: CrawledWeb, tmp_path: Path) -> None:
    urls = {a.slug: u for u, a in indexed.web.expected_content().items() if "/posts/" in u}
    judged = tmp_path / "judged.jsonl"
    judged.write_text("\n".join(json.dumps({"query": q, "relevant": {urls[s]: 2}}) for q, s in [
        ("one tenant overloads a single partition", "hot-shards-key-salting"),
        ("split a big database across machines", "database-sharding-strategies"),
    ]) + "\n")
    proc = linklens("eval", str(judged), "--json", data_dir=indexed.settings.data_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["metrics"]) == {"dense", "bm25", "hybrid"}
    assert report["metrics"]["hybrid"]["recall@10"] == 1.0
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "x"}\nnot json\n')
    bad = in_process("eval", str(broken), data_dir=indexed.settings.data_dir)
    assert bad.exit_code == 1 and handled(bad) and "line" in bad.stderr, bad.output


def test_eval_gives_intervals_groups_and_a_paired_comparison_of_saved_runs(
    indexed: CrawledWeb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The judgements name articles by "host/path"; --url-template puts the scheme back.
    ids = {a.slug: u.split("://", 1)[1] for u, a in indexed.web.expected_content().items() if "/posts/" in u}
    scheme = next(iter(indexed.web.expected_content())).split("://", 1)[0]
    judged = tmp_path / "judged.jsonl"
    rows = [
        ("q1", "one tenant overloads a single partition", "hot-shards-key-salting", "Sharding", "question", "dev"),
        ("q2", "split a big database across machines", "database-sharding-strategies", "Sharding", "question", "dev"),
        ("q3", "token bucket", "token-bucket-rate-limiting", "APIs", "keywords", "test"),
    ]
    judged.write_text("".join(json.dumps({"id": i, "query": q, "relevant": {ids[s]: 2}, "section": sec, "kind": kind,
                                          "split": split}) + "\n" for i, q, s, sec, kind, split in rows))
    monkeypatch.setenv("LINKLENS_DATA_DIR", str(indexed.settings.data_dir))
    template = ["--url-template", scheme + "://{id}"]
    runs = tmp_path / "before.json"
    result = runner.invoke(app, ["eval", str(judged), *template, "--mode", "hybrid", "--mode", "bm25",
                                 "--save-run", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 3 and set(report["configurations"]) == {"hybrid", "bm25"}
    hybrid = report["configurations"]["hybrid"]
    assert hybrid["metrics"]["recall@50"]["mean"] == 1.0
    assert hybrid["metrics"]["ndcg@10"]["low"] <= hybrid["metrics"]["ndcg@10"]["mean"] <= 1.0
    assert set(hybrid["by_section"]) == {"Sharding", "APIs"} and hybrid["by_kind"]["question"]["queries"] == 2

    dev = runner.invoke(app, ["eval", str(judged), *template, "--split", "dev", "--compare", f"{runs}#hybrid",
                              "hybrid", "--json"])
    assert dev.exit_code == 0, dev.output
    same = json.loads(dev.stdout)
    assert same["queries"] == 2
    assert same["metrics"]["ndcg@10"]["same"] == 2 and same["metrics"]["ndcg@10"]["beyond_noise"] is False
    assert same["metrics"]["ndcg@10"]["difference"] == {"mean": 0.0, "low": 0.0, "high": 0.0}

    table = runner.invoke(app, ["eval", str(judged), *template, "--compare", f"{runs}#bm25", f"{runs}#hybrid"])
    assert table.exit_code == 0, table.output
    assert "candidate before.json#hybrid against baseline before.json#bm25, 3 queries" in table.stdout
    assert "recall@50" in table.stdout and "difference by section" in table.stdout

    unknown = runner.invoke(app, ["eval", str(judged), *template, "--split", "validation"])
    assert unknown.exit_code == 1 and "splits in the file: dev, test" in unknown.output


def test_build_with_no_network_still_indexes_the_titles(tmp_path: Path, built: BuiltIndex,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "offline.md"
    listing.write_text("# Awesome Offline\n\n## Databases\n\n"
                       "* [How Sharding Works](https://blog.example.invalid/how-sharding-works)\n"
                       "* [Caching at Scale](https://cache.example.invalid/at-scale)\n")
    data = tmp_path / "offline-data"
    monkeypatch.setenv("LINKLENS_DATA_DIR", str(data))
    monkeypatch.setenv("LINKLENS_ARCHIVE_URL", "https://archive.example.invalid")
    seed_caches(built.settings, load_settings())
    result = runner.invoke(app, ["build", str(listing), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["crawl"]["fetched_anything"] is False
    assert report["index"]["articles"] == 2
    found = in_process("search", "database sharding", "--json", data_dir=data)
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["results"][0]["title"] == "How Sharding Works"


def test_index_kind_override_and_a_quiet_default_log(indexed: CrawledWeb) -> None:
    proc = linklens("index", "--kind", "hnsw", data_dir=indexed.settings.data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "hnsw index" in proc.stderr
    assert "DEBUG" not in proc.stderr and "INFO" not in proc.stderr, proc.stderr  # e.g. bm25s' own debug lines
    stats = in_process("search", "hot shards", "--json", data_dir=indexed.settings.data_dir)
    assert stats.exit_code == 0, stats.output
    bad = in_process("index", "--kind", "annoy", data_dir=indexed.settings.data_dir)
    assert bad.exit_code == 2 and "annoy" in bad.stderr and handled(bad), bad.output
