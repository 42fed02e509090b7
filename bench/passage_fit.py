"""Do our passages fit the model? Word pieces per passage on the sysdesign corpus, and embedding speed. JSON out.

Run: .venv/bin/python bench/passage_fit.py [--speed] [--out FILE]
     (timed: flock /tmp/linklens-bench.lock .venv/bin/python bench/passage_fit.py --speed)

MiniLM-L6 was trained on up to 128 word pieces and truncates at 256: whatever a
passage holds beyond its model's limit is never embedded (BM25 still sees it).
For each passage layout (words, overlap) this counts the passages the model reads
(what the embedder is given: "Title — Section: text", [CLS] and [SEP] included)
over 128 and over 256 word pieces, and the share of all word pieces cut off at
the model's limit. `--speed` embeds SPEED_PASSAGES default passages with the build
path (sentence-transformers, every core) and reports passages per second, the
figure that scales the build time of other models. The corpus is read at run time
only; nothing of it is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import relevance  # noqa: E402

from index.embedder import Embedder  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.passages import article_passages  # noqa: E402
from ingest.settings import load_settings  # noqa: E402
from ingest.store import Store  # noqa: E402

LAYOUTS = ((180, 30), (100, 30), (250, 60))  # (passage words, overlap words); the first is today's default
LIMITS = (128, 256)  # MiniLM's training length and its truncation length, in word pieces
SPEED_PASSAGES = 512
SPEED_SEED = 0


def sysdesign_articles(rows: list[dict]) -> list:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="linklens-fit-") as tmp, Store.open(Path(tmp) / "store.sqlite3") as store:
        relevance.fill_sysdesign(store, rows)
        return list(store.articles())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="Also measure embedding passages per second.")
    parser.add_argument("--out", type=Path, help="Also write the JSON result to this file.")
    args = parser.parse_args()
    if not relevance.SYSDESIGN_CORPUS.exists():
        raise SystemExit(f"{relevance.SYSDESIGN_CORPUS} not found")
    articles = sysdesign_articles(relevance.sysdesign_rows())
    embedder = Embedder(configured_model(load_settings()))
    tokenizer = embedder.model.tokenizer
    max_length = int(embedder.model.max_seq_length)
    result: dict[str, object] = {"model": embedder.ref.id, "max_seq_length": max_length, "layouts": {}}
    default_texts: list[str] = []
    for words, overlap in LAYOUTS:
        passages = [p for a in articles for p in article_passages(a, words, overlap)]
        body = [p.indexed_text for p in passages if p.kind == "body"]
        pieces = np.array([len(ids) for ids in tokenizer(body, add_special_tokens=True)["input_ids"]])
        result["layouts"][f"{words}w/{overlap}o"] = {  # type: ignore[index]
            "body_passages": len(body),
            "word_pieces_median": int(np.median(pieces)),
            "word_pieces_p90": int(np.percentile(pieces, 90)),
            **{f"over_{limit}": int((pieces > limit).sum()) for limit in LIMITS},
            **{f"share_over_{limit}": round(float((pieces > limit).mean()), 3) for limit in LIMITS},
            "share_of_word_pieces_cut": round(float(np.maximum(pieces - max_length, 0).sum() / pieces.sum()), 3),
        }
        if not default_texts:
            default_texts = [p.indexed_text for p in passages]
    if args.speed:
        rng = np.random.default_rng(SPEED_SEED)
        sample = [default_texts[i] for i in rng.choice(len(default_texts), SPEED_PASSAGES, replace=False)]
        embedder.encode(sample[:32])  # warm-up
        started = time.perf_counter()
        embedder.encode(sample)
        seconds = time.perf_counter() - started
        result["speed"] = {
            "passages": SPEED_PASSAGES,
            "seconds": round(seconds, 2),
            "passages_per_s": round(SPEED_PASSAGES / seconds, 1),
            "layout": "180w/30o",
        }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
