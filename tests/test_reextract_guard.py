"""`crawl --reextract` runs each link under the same guard as the crawl: one corrupt stored body
ends that link `failed` with the reason, and every other link is extracted again."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from ingest.models import Document
from ingest.settings import Settings
from ingest.store import Store
from tests.fixtureweb import FixtureWeb

runner = CliRunner()


def test_a_corrupt_stored_body_fails_its_link_and_the_rest_are_extracted_again(
        web: FixtureWeb, crawl_settings: Settings, list_file: Path) -> None:
    first = runner.invoke(app, ["crawl", str(list_file), "--json"])
    assert first.exit_code == 0, first.output
    with Store.open(crawl_settings.store_path) as store:
        with_text = [a for a in store.articles() if a.document and a.document.text.strip() and "/posts/" in a.url]
        corrupt, stale = with_text[0], with_text[1]
        before = store.document(stale.link_id)
        store._conn.execute("UPDATE bodies SET body = x'00112233445566' WHERE link_id = ?", (corrupt.link_id,))
        store.replace_document(stale.link_id, Document(title="stale", text="stale", kind="thin", thin=True))
        stored = len(store.link_ids_with_bodies())

    again = runner.invoke(app, ["crawl", "--reextract", "--json"])
    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    assert json.loads(again.stdout)["reextracted"] == stored
    with Store.open(crawl_settings.store_path) as store:
        row = store.link(corrupt.link_id)
        assert row["state"] == "failed"
        assert str(row["reason"]).startswith("unexpected error while extracting the stored copy again: error ("), \
            row["reason"]
        assert store.document(stale.link_id) == before  # the run went on past the corrupt body
