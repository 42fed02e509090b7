"""Bad input ends with one clear sentence and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ingest.politeness import NETWORK_DOWN_AFTER_HOSTS
from ingest.settings import DEFAULT_CONCURRENCY
from tests.fixtureweb import FixtureWeb

runner = CliRunner()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A real process, so we see exactly what a user sees on stderr."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_missing_file(tmp_path: Path) -> None:
    assert_one_clear_error(run_cli("crawl", str(tmp_path / "nope.md")), "no such file", "nope.md")


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    assert_one_clear_error(run_cli("crawl", str(tmp_path)), "is a folder")


def test_a_list_with_no_links(tmp_path: Path) -> None:
    empty = tmp_path / "empty.md"
    empty.write_text("# Awesome Nothing\n\nJust words, no list items.\n\n## License\n\n[CC0](https://x.org)\n")
    assert_one_clear_error(run_cli("crawl", str(empty)), "holds no list links")


def test_a_binary_file(tmp_path: Path) -> None:
    blob = tmp_path / "image.png"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    assert_one_clear_error(run_cli("crawl", str(blob)), "binary")


def test_a_url_that_is_not_a_list(web: FixtureWeb) -> None:
    assert_one_clear_error(run_cli("crawl", web.host_urls[0] + "/"), "HTML page", "raw markdown")


def test_a_url_that_does_not_exist(web: FixtureWeb) -> None:
    assert_one_clear_error(run_cli("crawl", web.host_urls[0] + "/no-such-list.md"), "HTTP 404")


def test_a_list_served_over_http_is_crawled(web: FixtureWeb, crawl_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["crawl", web.list_url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["crawled"] == len(web.expected_states())


def test_an_unwritable_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root in CI, where permission bits do not stop writes; a path below a file always fails.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LINKLENS_DATA_DIR", str(blocker / "data"))
    listing = tmp_path / "list.md"
    listing.write_text("## Reading\n\n* [A post](https://example.invalid/post)\n")
    assert_one_clear_error(run_cli("crawl", str(listing)), "data folder", "LINKLENS_DATA_DIR")


def test_a_bad_setting_names_the_key_and_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKLENS_CONCURRENCY", "lots")
    assert_one_clear_error(run_cli("path"), "LINKLENS_CONCURRENCY", "lots")


def test_unknown_state_is_a_usage_error() -> None:
    proc = run_cli("links", "--state", "sleeping")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_links_before_any_crawl_says_what_to_run() -> None:
    proc = run_cli("links")
    assert proc.returncode == 1 and "linklens crawl" in proc.stderr


def test_with_no_network_the_crawl_ends_quickly_and_says_so(tmp_path: Path, crawl_env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """.invalid never resolves (RFC 6761): the same DNS failure a machine without network meets."""
    lines = ["# Awesome Offline", "", "## Reading", ""]
    lines += [f"* [Post {i}](https://host{i % 30}.example.invalid/post/{i})" for i in range(60)]
    listing = tmp_path / "offline.md"
    listing.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LINKLENS_ARCHIVE_URL", "https://archive.example.invalid")
    monkeypatch.setenv("LINKLENS_PER_HOST_DELAY_S", "1.0")  # the default politeness must not slow this down
    proc = run_cli("crawl", str(listing))
    assert proc.returncode == 0, proc.stderr
    assert "nothing could be fetched" in proc.stderr
    assert "searchable by their list titles" in proc.stderr
    report = json.loads(run_cli("links", "--format", "json").stdout)
    assert len(report) == 60
    dead = [r for r in report if r["state"] == "dead"]
    not_tried = [r for r in report if r["state"] == "pending"]
    # Nothing answered, so a failed lookup is no evidence that a host is gone: no link is dead. After a
    # dozen hosts fail and none answers, the rest are not even tried. Every link stays pending, with
    # the reason, so the same command run again once online takes them all up.
    assert dead == []
    assert len(not_tried) == 60, [(r["url"], r["state"], r["reason"]) for r in report if r["state"] != "pending"]
    assert all("network looks down" in r["reason"] for r in not_tried)
    tried = [r for r in not_tried if "does not resolve" in r["reason"]]
    # Bounded work instead of a stopwatch: once NETWORK_DOWN_AFTER_HOSTS hosts failed with none answering,
    # no further host is looked up (plus those already in flight: at most one per crawl slot).
    assert 0 < len(tried) < 60
    hosts_tried = {r["url"].split("/")[2] for r in tried}
    assert 0 < len(hosts_tried) <= NETWORK_DOWN_AFTER_HOSTS + DEFAULT_CONCURRENCY, sorted(hosts_tried)
    again = run_cli("crawl", str(listing), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["crawled"] == 60
