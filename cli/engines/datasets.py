"""The Ray engine's datasets on disk: their names, their Parquet schemas, and Article ⇄ row.

Data passes between stages as Parquet, never only in a driver's memory, under
`Settings.datasets_location` (a folder, or any pyarrow filesystem URI such as
`s3://bucket/prefix`):

* `articles/`   one row per article the index takes in (`ARTICLE_SCHEMA`): the link's list
                context and its extracted document, written from the page store after the crawl;
* `passages/`   one row per passage with its vector (written by the index stage);
* `embeddings/<model key>/`  vectors by passage id, the cache every embedding actor reads
                first, so no passage is embedded twice whichever worker did it.

pyarrow is imported lazily: it comes with the `ray` extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ingest.models import Article, Document, Filing, LinkState

if TYPE_CHECKING:
    import pyarrow as pa

ARTICLES = "articles"
PASSAGES = "passages"
EMBEDDINGS = "embeddings"

_DOCUMENT_FIELDS = ("title", "text", "kind", "author", "date", "sitename", "language", "description", "thin")


def article_schema() -> pa.Schema:
    """Columns of `articles/`: the article's place in list order, every field of `Article`, the document's fields
    prefixed `doc_`.

    `position` is what orders the index (Ray Data gives no order across files and tasks): the
    Ray index sorts by it, so the snapshot holds the articles in list order as the local one does.
    `filings` holds each place the article has: the list's name and the section path, a list of headings.
    """
    import pyarrow as pa

    text = pa.string()
    filing = pa.struct([("list", text), ("section", pa.list_(text))])
    return pa.schema([
        ("position", pa.int64()), ("link_id", pa.int64()), ("url", text), ("host", text), ("list_title", text),
        ("filings", pa.list_(filing)), ("state", text), ("final_url", text), ("archived_url", text),
        ("has_document", pa.bool_()), ("lists", pa.list_(text)),
        ("doc_title", text), ("doc_text", text), ("doc_kind", text), ("doc_author", text), ("doc_date", text),
        ("doc_sitename", text), ("doc_language", text), ("doc_description", text), ("doc_thin", pa.bool_()),
    ])


def article_row(article: Article, position: int) -> dict[str, Any]:
    """One `articles/` row for `article`, the `position`-th in list order."""
    doc = article.document
    row: dict[str, Any] = {
        "position": position, "link_id": article.link_id, "url": article.url, "host": article.host,
        "list_title": article.list_title,
        "filings": [{"list": f.list_name, "section": list(f.section)} for f in article.filings],
        "state": article.state.value, "final_url": article.final_url,
        "archived_url": article.archived_url, "has_document": doc is not None, "lists": list(article.lists),
    }
    for name in _DOCUMENT_FIELDS:
        row[f"doc_{name}"] = None if doc is None else getattr(doc, name)
    return row


def article_from_row(row: dict[str, Any]) -> Article:
    """The `Article` an `articles/` row was written from (inverse of `article_row`)."""
    document = None
    if row["has_document"]:
        document = Document(**{name: row[f"doc_{name}"] for name in _DOCUMENT_FIELDS})
    if "filings" in row:
        filings = [Filing(f["list"], tuple(f["section"])) for f in row["filings"] or []]
    else:  # written before sections were paths: labels joined with " / ", no filing list
        filings = [Filing("", tuple(label.split(" / "))) for label in row["sections"] or []]
    return Article(
        link_id=int(row["link_id"]), url=row["url"], host=row["host"], list_title=row["list_title"],
        filings=filings, state=LinkState(row["state"]), final_url=row["final_url"],
        archived_url=row["archived_url"], document=document, lists=list(row["lists"] or []),
    )


def article_tables(articles: Iterable[Article], rows_per_table: int = 1024) -> Iterator[pa.Table]:
    """`articles` (in list order) as Parquet-ready tables of at most `rows_per_table` rows, streamed.

    Rows are numbered 0, 1, 2, ... in the `position` column: call this once over the whole
    corpus (`Store.articles()`), so that positions are the list order.
    """
    import pyarrow as pa

    schema = article_schema()
    batch: list[dict[str, Any]] = []
    for position, article in enumerate(articles):
        batch.append(article_row(article, position))
        if len(batch) >= rows_per_table:
            yield pa.Table.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=schema)


def articles_from_table(table: pa.Table) -> list[Article]:
    return [article_from_row(row) for row in table.to_pylist()]


def dataset_uri(location: str, name: str) -> str:
    """`location`/`name`, for a local folder or a filesystem URI alike."""
    return f"{location.rstrip('/')}/{name}"
