"""Real-like corpora of any size for the index and serve benchmarks, generated at run time, never committed.

Embedding a million real passages on 2 cores would take ~17 hours, and random
vectors make ANN recall meaningless (they have no neighbourhoods). So:

* Base: the real passages of ../shared/corpora/sysdesign (400 articles; the
  repository's fixture articles when ../shared is absent), cut by linklens' own
  passage cutter and embedded ONCE with the bundled model; cached outside the
  repository (default ../bench-cache beside the checkout, `--cache`), keyed by corpus and model.
* Vectors: each synthetic paragraph takes a random base passage `a` and two of
  its NEIGHBOURS nearest real passages `b`, `c`, and is
      v = normalise(w_a·v_a + w_b·v_b + w_c·v_c + ε),  w ~ Dirichlet(MIX_WEIGHTS),  ε ~ N(0, NOISE_NORM²/d · I),
  i.e. a point on the real manifold among three real neighbours, perturbed. A
  million of them keep the real corpus's neighbourhood structure, densified.
  NOISE_NORM is set so neighbourhoods are as tight as a dense real corpus's, not
  tighter: measured at 100k, a vector's nearest neighbour has cosine 0.88 and its
  10th 0.86 (real sysdesign passages among themselves: 0.79 and 0.63); a smaller
  noise (0.15) makes near-duplicate clusters (0.97 / 0.95) where recall@10 only
  measures the order of ties.
* Text: the paragraph's sentences are drawn from `a`'s, `b`'s and `c`'s real
  sentences in the same proportions, 110-150 words, so BM25 sees real vocabulary
  with real frequencies and text agrees with its vector.
* Articles: PARAGRAPHS_PER_ARTICLE paragraphs (+ the title card linklens adds =
  5 passages), a list section inherited from the base article, and a host drawn
  from a Zipf law over HOSTS sites, so one-host and one-section filters range from
  a few passages to a few percent of the corpus, as in a real collection.

`bench/serve.py` can reuse it: `SyntheticCorpus(base_passages(...), passages).articles()`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_CORPUS = REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl"
DEFAULT_CACHE = REPO.parent / "bench-cache"  # outside the repository: GBs of data at 1M passages
NEIGHBOURS = 10
MIX_WEIGHTS = (2.0, 1.0, 1.0)
NOISE_NORM = 0.35
PARAGRAPHS_PER_ARTICLE = 4
PARAGRAPH_MIN_WORDS = 110
PARAGRAPH_MAX_WORDS = 150
HOSTS = 5000
HOST_ZIPF = 1.3
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class BasePassages:
    """The real passages the synthetic corpus recombines: text split in sentences, vector, section, neighbours."""

    sentences: list[list[str]]
    sections: list[str]
    vectors: np.ndarray
    neighbours: np.ndarray
    source: str


def _real_articles() -> tuple[list[dict], str]:
    if REAL_CORPUS.exists():
        rows = [json.loads(line) for line in REAL_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [{"title": r["title"], "section": r["section"], "text": r["text"]} for r in rows], str(REAL_CORPUS)
    from tests.fixtures.relevance import ARTICLES_FILE, fixture_articles

    articles = [
        {"title": a["title"], "section": a["section"], "text": "\n\n".join(a["paragraphs"])} for a in fixture_articles()
    ]
    return articles, str(ARTICLES_FILE)


def base_passages(cache: Path, embed: Callable[[list[str]], np.ndarray], model_id: str) -> BasePassages:
    """The real passages and their embeddings, computed once and cached in `cache`."""
    from index.passages import chunk_text

    articles, source = _real_articles()
    digest = hashlib.sha256(f"{model_id}\n{source}\n{Path(source).stat().st_size}".encode()).hexdigest()[:12]
    path = cache / f"base-{digest}.npz"
    texts: list[str] = []
    sections: list[str] = []
    for a in articles:
        for chunk in chunk_text(a["text"]):
            texts.append(chunk)
            sections.append(a["section"])
    if path.exists():
        vectors = np.load(path)["vectors"]
    else:
        cache.mkdir(parents=True, exist_ok=True)
        vectors = np.asarray(embed(texts), dtype=np.float32)
        np.savez(path, vectors=vectors)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -2.0)
    neighbours = np.argsort(-similarity, axis=1)[:, :NEIGHBOURS]
    sentences = [[s for s in _SENTENCE.split(" ".join(t.split())) if s] for t in texts]
    return BasePassages(sentences, sections, vectors, neighbours, source)


@dataclass(frozen=True)
class SyntheticArticle:
    """One generated article: list placement, body paragraphs, and the vector of each paragraph."""

    number: int
    url: str
    host: str
    title: str
    section: str
    paragraphs: list[str]
    vectors: np.ndarray  # one row per paragraph

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


class SyntheticCorpus:
    """A deterministic stream of articles totalling about `passages` passages (title cards included)."""

    def __init__(self, base: BasePassages, passages: int, seed: int = 7) -> None:
        self.base = base
        self.seed = seed
        self.article_count = max(1, passages // (PARAGRAPHS_PER_ARTICLE + 1))

    def articles(self) -> Iterator[SyntheticArticle]:
        rng = np.random.default_rng(self.seed)
        hosts = np.minimum(rng.zipf(HOST_ZIPF, self.article_count), HOSTS)
        for number in range(self.article_count):
            picks = rng.integers(0, len(self.base.sentences), PARAGRAPHS_PER_ARTICLE)
            paragraphs, rows = [], []
            for a in picks:
                b, c = (int(x) for x in self.base.neighbours[a, rng.choice(NEIGHBOURS, 2, replace=False)])
                weights = rng.dirichlet(MIX_WEIGHTS)
                paragraphs.append(self._paragraph(rng, (int(a), b, c), weights))
                rows.append(self._vector(rng, (int(a), b, c), weights))
            host = f"site{int(hosts[number])}.example.org"
            words = paragraphs[0].split()[:8]
            yield SyntheticArticle(
                number=number,
                url=f"https://{host}/a/{number}",
                host=host,
                title=" ".join(words).rstrip(".,;:") or f"Article {number}",
                section=self.base.sections[int(picks[0])],
                paragraphs=paragraphs,
                vectors=np.stack(rows),
            )

    def _paragraph(self, rng: np.random.Generator, picks: tuple[int, int, int], weights: np.ndarray) -> str:
        sources = [self.base.sentences[i] or ["Systems scale by splitting work."] for i in picks]
        cursors = [0, 0, 0]
        out: list[str] = []
        count = 0
        for _ in range(sum(len(x) for x in sources) + 8):
            which = int(rng.choice(3, p=weights))
            source = sources[which]
            sentence = source[cursors[which] % len(source)]
            cursors[which] += 1
            size = len(sentence.split())
            if count + size > PARAGRAPH_MAX_WORDS:
                if count >= PARAGRAPH_MIN_WORDS:
                    break
                sentence = " ".join(sentence.split()[: PARAGRAPH_MAX_WORDS - count])
                size = len(sentence.split())
            out.append(sentence)
            count += size
            if count >= PARAGRAPH_MIN_WORDS and rng.random() < 0.3:
                break
        return " ".join(out)

    def _vector(self, rng: np.random.Generator, picks: tuple[int, int, int], weights: np.ndarray) -> np.ndarray:
        v = self.base.vectors
        d = v.shape[1]
        point = weights @ v[list(picks)] + rng.normal(0, NOISE_NORM / np.sqrt(d), d)
        return (point / np.linalg.norm(point)).astype(np.float32)


# The synthetic corpus is written as this one list, in batches added to it (never synced per batch).
SYNTHETIC_LIST_SOURCE = "synthetic-corpus.md"
# Bumped when fill_data_dir's output changes, so that a cache prepared by older code is prepared again
# (2: every batch kept; format 1 synced each batch as the whole list and kept only the last one).
PREPARED_FORMAT = 2
# How far a snapshot's passage count may be from the size a benchmark is labelled with.
SIZE_TOLERANCE = 0.01
# Links written to the page store per call (one transaction per link outcome, as a crawl writes them).
FILL_BATCH = 2000


def fill_data_dir(data_dir: Path, corpus: SyntheticCorpus, model_id: str, log: Callable[[str], None],
                  batch: int = FILL_BATCH) -> int:
    """A page store holding the corpus as crawled links, and an embedding cache holding every passage's vector.

    Afterwards `linklens index` (LINKLENS_DATA_DIR=data_dir) builds "from cached
    embeddings": it reads, cuts and indexes everything, and embeds nothing. Passage
    vectors are keyed as the build keys them (model, passage id), each body passage
    taking the vector of the paragraph it holds (the cutter keeps 110-150-word
    paragraphs whole), the title card its first paragraph's. Returns the passage count.
    """
    from index.build import EMBEDDING_CACHE_FILE
    from index.embedding_cache import EmbeddingCache
    from index.passages import article_passages
    from ingest.models import Article, CrawlOutcome, Document, Filing, LinkState, ListedLink, ListPlacement
    from ingest.settings import load_settings
    from ingest.store import Store

    settings = load_settings(data_dir=data_dir)
    total = 0
    rng = np.random.default_rng(corpus.seed + 1)
    with Store.open(settings.store_path) as store, EmbeddingCache.open(
        settings.cache_dir / EMBEDDING_CACHE_FILE
    ) as cache:
        pending: list[SyntheticArticle] = []

        def flush() -> int:
            links = [ListedLink(a.url, [ListPlacement((a.section,), a.title, a.number)]) for a in pending]
            store.add_links(links, source=SYNTHETIC_LIST_SOURCE)
            ids = dict(store._conn.execute(
                f"SELECT url, id FROM links WHERE url IN ({','.join('?' * len(links))})", [x.url for x in links]
            ).fetchall())  # fmt: skip
            vectors = []
            for a in pending:
                doc = Document(title=a.title, text=a.text, kind="html", sitename=a.host, language="en")
                store.record_outcome(ids[a.url], CrawlOutcome(state=LinkState.OK, reason="fetched", document=doc,
                                                              final_url=a.url, http_status=200))
                filed = [Filing("(unnamed list)", (a.section,))]
                article = Article(ids[a.url], a.url, a.host, a.title, filed, LinkState.OK, a.url, None, doc)
                passages = article_passages(article)
                body = passages[1:]
                for p in passages:
                    if p.ordinal == 0:
                        v = a.vectors[0] + rng.normal(0, NOISE_NORM / np.sqrt(a.vectors.shape[1]), a.vectors.shape[1])
                        v = v / np.linalg.norm(v)
                    elif len(body) == len(a.paragraphs):
                        v = a.vectors[p.ordinal - 1]
                    else:  # the cutter split differently: the last paragraph whose opening the passage holds
                        held = [i for i, par in enumerate(a.paragraphs) if par[:60] in p.text]
                        v = a.vectors[held[-1] if held else min(p.ordinal - 1, len(a.paragraphs) - 1)]
                    vectors.append((p.id, np.asarray(v, dtype=np.float32)))
            cache.put_many(model_id, vectors)
            pending.clear()
            return len(vectors)

        for article in corpus.articles():
            pending.append(article)
            if len(pending) == batch:
                total += flush()
                log(f"filled {total} passages")
        if pending:
            total += flush()
    return total


def bundled_embed(texts: list[str]) -> np.ndarray:
    """Embed with the bundled model through linklens' build path (loads torch)."""
    from index.embedder import Embedder
    from index.model_ref import configured_model
    from ingest.settings import load_settings

    return Embedder(configured_model(load_settings())).encode(texts)


def snapshot_of_size(data_dir: Path, size: int) -> dict[str, object]:
    """The manifest figures of `data_dir`'s current snapshot, checked against the size a benchmark claims.

    A figure labelled "100k" must come from a ~100,000-passage index: stops with a sentence when
    the snapshot's passage count is more than SIZE_TOLERANCE away from `size`.
    """
    from index.snapshot import Manifest, current_folder

    manifest = Manifest.load(current_folder(data_dir / "snapshots", data_dir))
    if abs(manifest.passages - size) > SIZE_TOLERANCE * size:
        raise SystemExit(
            f"the snapshot in {data_dir} holds {manifest.passages} passages, not ~{size} (more than "
            f"{SIZE_TOLERANCE:.0%} off): its figures would be mislabelled — prepare the data again "
            f"(delete {data_dir} and run bench/index.py --prepare --sizes {size})"
        )
    return {"passages": manifest.passages, "articles": manifest.articles, "index_kind": manifest.index_kind,
            "snapshot_id": manifest.snapshot_id}
