"""One typed settings object, read from the environment (`LINKLENS_*`).

It lives in the lowest stage so every stage reads the same configuration; the
index and serve fields are plain values here, not imports of those stages.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.errors import ConfigError

APP_NAME = "linklens"
VERSION = "0.1.0"
DEFAULT_USER_AGENT = f"linklens/{VERSION} (+https://github.com/linklens/linklens; search over curated link lists)"
DEFAULT_ARCHIVE_URL = "https://archive.org"
# Where a `github.com/owner/repo` link's README is read as raw markdown.
DEFAULT_GITHUB_RAW_URL = "https://raw.githubusercontent.com"
# Lists one `--lists-from` list of lists may bring into a collection.
DEFAULT_MAX_LISTS = 200
# Links one list, and one whole collection, may hold. The largest real lists hold a few thousand links
# (awesome-selfhosted ~1,300, free-programming-books ~4,000 in its biggest file) and a full
# awesome-of-awesome (sindresorhus/awesome: ~700 lists of a few hundred links each) ~150,000: the
# defaults fit those with room, and keep a stranger's list from filling the store and every crawl after.
DEFAULT_MAX_LIST_LINKS = 20_000
DEFAULT_MAX_COLLECTION_LINKS = 200_000
DEFAULT_CONCURRENCY = 16
DEFAULT_PER_HOST_CONCURRENCY = 2
DEFAULT_PER_HOST_DELAY_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 20.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0
MAX_BODY_BYTES = 10 * 2**20
DEFAULT_MAX_REDIRECTS = 10
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_MAX_S = 30.0
DEFAULT_MAX_RETRY_AFTER_S = 120.0
# A link whose host could not be reached is tried once more at the end of the crawl, no sooner than this.
DEFAULT_SECOND_TRY_AFTER_S = 10.0
# Idle per-origin connection pools kept open; the least recently used beyond this are closed.
DEFAULT_MAX_HOST_POOLS = 64

DEFAULT_EXTRACT_TIMEOUT_S = 30.0
# Address space per extraction worker: a 10 MB page peaks near 600 MB; past this a runaway parse gets
# MemoryError (or dies) instead of taking the machine's memory.
DEFAULT_EXTRACT_MEMORY_MB = 1024
# The query encoder's weights. The 8-bit one halves encoding, and on the fair set's dev split it ranks as
# well as the float one (issue 18: nDCG@10 difference -0.0001 [-0.014, +0.016], docs/measured.md).
DEFAULT_QUERY_PRECISION = "int8"
MIN_EXTRACT_MEMORY_MB = 256  # below this a worker cannot even load the extractor


class Settings(BaseSettings):
    """Every knob of linklens. Environment variables win; defaults suit the public web."""

    model_config = SettingsConfigDict(env_prefix="LINKLENS_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)))

    # crawl
    user_agent: str = DEFAULT_USER_AGENT
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=512)
    per_host_concurrency: int = Field(DEFAULT_PER_HOST_CONCURRENCY, ge=1, le=64)
    per_host_delay_s: float = Field(DEFAULT_PER_HOST_DELAY_S, ge=0)
    connect_timeout_s: float = Field(DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    read_timeout_s: float = Field(DEFAULT_READ_TIMEOUT_S, gt=0)
    request_timeout_s: float = Field(DEFAULT_REQUEST_TIMEOUT_S, gt=0,
                                     description="total for one request: connect, headers and body, redirects included")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    max_redirects: int = Field(DEFAULT_MAX_REDIRECTS, ge=0, le=50)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    backoff_base_s: float = Field(DEFAULT_BACKOFF_BASE_S, ge=0)
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, ge=0)
    max_retry_after_s: float = Field(DEFAULT_MAX_RETRY_AFTER_S, ge=0)
    second_try_after_s: float = Field(DEFAULT_SECOND_TRY_AFTER_S, ge=0)
    max_host_pools: int = Field(DEFAULT_MAX_HOST_POOLS, ge=1, le=10_000)
    respect_robots: bool = True
    archive_url: str = DEFAULT_ARCHIVE_URL
    use_archive: bool = True
    private_targets: str = Field("auto", pattern="^(auto|allow|deny)$",
                                 description="may links reach loopback/private addresses: auto = only links of lists "
                                             "read from a file or a private address (docs/address-policy.md)")
    github_raw_url: str = Field(DEFAULT_GITHUB_RAW_URL, description="raw file host for github.com/owner/repo links")
    max_lists: int = Field(DEFAULT_MAX_LISTS, ge=1, le=10_000,
                           description="lists a --lists-from list may bring in; the rest are left out and reported")
    max_list_links: int = Field(DEFAULT_MAX_LIST_LINKS, ge=1,
                                description="links one list may hold; a longer list is skipped with the reason")
    max_collection_links: int = Field(DEFAULT_MAX_COLLECTION_LINKS, ge=1,
                                      description="links a collection may hold; a list that would pass it is "
                                                  "skipped with the reason")
    extract_workers: int = Field(0, ge=0, description="0 = one per core")
    extract_timeout_s: float = Field(DEFAULT_EXTRACT_TIMEOUT_S, gt=0,
                                     description="time limit per document; past it the worker is replaced")
    extract_memory_mb: int = Field(DEFAULT_EXTRACT_MEMORY_MB, ge=MIN_EXTRACT_MEMORY_MB,
                                   description="address-space limit of each extraction worker")
    include_comments: bool = Field(False, description="keep reader comments below an article in its text; off: "
                                                      "mostly noise for search (see README)")

    # index
    model: str = Field("", description="sentence-transformers name or path; empty = bundled all-MiniLM-L6-v2")
    query_prefix: str | None = Field(None, description="text put before every query; unset = the model's own")
    passage_prefix: str | None = Field(None, description="text put before every passage; unset = the model's own")
    passage_words: int = Field(180, ge=40, le=1000)
    passage_overlap_words: int = Field(30, ge=0, le=500)
    passage_headings: bool = Field(False, description="put a passage's markdown heading path in its context")
    ann_threshold: int = Field(20_000, ge=1, description="passages above which an HNSW index replaces the exact one")
    lean_threshold: int = Field(
        500_000, ge=1, description="passages above which the memory-lean IVF index replaces HNSW"
    )
    index_kind: str = Field("auto", pattern="^(auto|flat|hnsw|ivf)$")
    keep_snapshots: int = Field(3, ge=1)
    candidates: int = Field(100, ge=10, le=2000)
    rrf_k: int = Field(60, ge=1)
    fusion: str = Field(
        "zscore", pattern="^(zscore|rrf|dense|bm25)$", description="hybrid by zscore or rrf fusion; or dense, bm25"
    )
    dense_weight: float = Field(1.5, ge=0, le=100, description="weight of the dense ranking in hybrid (BM25's is 1)")
    query_precision: str = Field(DEFAULT_QUERY_PRECISION, pattern="^(int8|float)$",
                                 description="query encoder weights: int8 (half the encoding time) or float")

    # engine (issue 9): where crawl and index run. `ray` needs the optional extra: pip install 'linklens[ray]'
    engine: str = Field("local", pattern="^(local|ray)$",
                        description="local (asyncio + process pool) or ray (Ray Data)")
    ray_address: str = Field("", description="Ray cluster to use (ray://host:10001 or auto); empty = RAY_ADDRESS, "
                                             "else a Ray started in this process")
    ray_cpus: int = Field(0, ge=0, description="CPUs of a Ray started in this process; 0 = every core")
    datasets_uri: str = Field("", description="where the Ray engine writes its Parquet datasets: a folder or any "
                                              "pyarrow filesystem URI (s3://bucket/prefix); empty = <data>/datasets")
    s3_endpoint_url: str = Field("", description="endpoint of an S3-compatible store for s3:// datasets "
                                                 "(http(s)://host:port); empty = AWS")
    datasets_grace_s: float = Field(600.0, ge=0, description="seconds a superseded dataset version is kept for "
                                                              "readers still on it before it is removed")
    embed_batch_size: int = Field(512, ge=1, le=4096, description="passages per embedding batch (Ray actors)")
    embed_actors: int = Field(1, ge=1, le=1024, description="embedding actors of the Ray engine (one model each)")
    embed_gpus: float = Field(0.0, ge=0, description="GPUs per embedding actor of the Ray engine; 0 = CPU")

    # serve
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_inflight: int = Field(16, ge=1, description="searches admitted at once; more are shed with 503")
    query_cache_size: int = Field(256, ge=0)
    reload_interval_s: float = Field(2.0, gt=0)

    @cached_property
    def store_path(self) -> Path:
        return self.data_dir / "linklens.sqlite3"

    @cached_property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @cached_property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @cached_property
    def datasets_location(self) -> str:
        """The Ray engine's Parquet datasets: the setting, or a folder in the data folder."""
        return self.datasets_uri or str(self.data_dir / "datasets")


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into one sentence naming key and value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "LINKLENS_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{key}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("bad setting " + "; ".join(problems) + " — fix or unset it") from None
