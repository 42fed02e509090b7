"""`linklens index` prints its own summary only; the model libraries' chatter shows with -v (issue 17).

A real run on a tiny data folder with no caches, so the real model is loaded (that
is where transformers prints its "Loading weights" bar) and the ONNX encoder exported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.models import CrawlOutcome, LinkState
from ingest.settings import load_settings
from ingest.store import Store
from tests.fixtures.relevance import fixture_articles, slug_urls
from tests.index_fixtures import MAIN_LIST, document_for, listed_links

REPO = Path(__file__).resolve().parent.parent
ARTICLES = 3
BUILD_TIMEOUT_S = 600
# What the libraries print when let: progress bars (tqdm draws with "it/s" and "%|"), transformers'
# and huggingface_hub's messages, Python warnings.
CHATTER = ("Loading weights", "it/s", "%|", "Warning:", "warnings.warn", "huggingface", "transformers")


def tiny_store(data_dir: Path) -> None:
    """A crawled collection of three fixture articles, nothing embedded yet."""
    settings = load_settings(data_dir=data_dir)
    urls = slug_urls()
    articles = fixture_articles()[:ARTICLES]
    wanted = {urls[a["slug"]] for a in articles}
    with Store.open(settings.store_path) as store:
        store.sync_collection([(f"/lists/{MAIN_LIST}.md", MAIN_LIST, [x for x in listed_links() if x.url in wanted])])
        ids = {row["url"]: int(row["id"]) for row in store.link_rows()}
        for article in articles:
            url = urls[article["slug"]]
            document = document_for(article, url.split("/")[2])
            outcome = CrawlOutcome(state=LinkState.OK, reason="fetched", final_url=url, http_status=200,
                                   document=document)
            store.record_outcome(ids[url], outcome)


def linklens(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_", "TRANSFORMERS_", "TQDM_"))}
    env["LINKLENS_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)  # fmt: skip


@pytest.mark.slow
def test_index_prints_its_own_summary_only_and_library_chatter_with_verbose(tmp_path: Path) -> None:
    tiny_store(tmp_path)

    quiet = linklens(tmp_path, "index")
    assert quiet.returncode == 0, quiet.stderr
    lines = [line for line in quiet.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("snapshot ") for line in lines), quiet.stderr
    assert f"{ARTICLES} articles" in lines[-1], lines
    assert not [word for word in CHATTER if word in quiet.stderr], quiet.stderr

    verbose = linklens(tmp_path, "-v", "index", "--rebuild")  # re-embeds: the model is loaded again
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading weights" in verbose.stderr, verbose.stderr
    assert "snapshot " in verbose.stderr, verbose.stderr
    assert re.search(r"^ *\d+ms INFO index\.build: built snapshot", verbose.stderr, re.M), verbose.stderr  # when
