"""Articles for the crawl and extraction benchmarks: the shared corpus when it is there, plus ours.

`../shared` is absent in a user's fresh clone, so the benchmarks still run on the
fixture articles alone; the label says which corpus a figure came from.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.fixtureweb import load_fixture_articles, load_sysdesign_articles
from tests.fixtureweb.pages import FixtureArticle

REPO = Path(__file__).resolve().parents[1]
# ../shared next to a clone, or two levels up from a git worktree (clone/../wt/<name>)
SYSDESIGN = next((path for path in (folder / "shared" / "corpora" / "sysdesign" / "articles.jsonl"
                                    for folder in (REPO.parent, REPO.parent.parent)) if path.exists()),
                 REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl")


def bench_articles(count: int) -> tuple[list[FixtureArticle], str]:
    """`count` articles (the corpus repeated, copies under distinct slugs) and a label naming the corpus."""
    base = load_sysdesign_articles(SYSDESIGN) if SYSDESIGN.exists() else []
    label = f"{len(base)} sysdesign articles" if base else "no ../shared corpus"
    own = load_fixture_articles()
    base += own
    articles = []
    for i in range(count):
        article = base[i % len(base)]
        if i >= len(base):
            article = replace(article, slug=f"{article.slug}-copy{i // len(base)}")
        articles.append(article)
    return articles, f"{label} + {len(own)} fixture articles, {count} pages"
