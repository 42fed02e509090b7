"""Parquet files of a `Datasets` → a Ray dataset, read by plain Ray Data tasks.

Why not `ray.data.read_parquet`: Ray 2.60 plans a Parquet read by listing the files in a task and
reading their footers with 32 `FooterReader` actors, each a worker process of its own. For the
one `articles/` file of a small build that took 6.5 s on 2 CPUs before the first article was read
(bench/ray_crawl.py --build), the longest wait of the embedding phase after the actors' start.
Our files are listed already (`Datasets.files`), so a task per group of files reads them straight
with the datasets' filesystem: no listing, no footer actors, the same rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from cli.engines.storage import Datasets

PATH_COLUMN = "path"


def parquet_dataset(ray: Any, datasets: Datasets, files: list[str], blocks: int,
                    columns: list[str] | None = None) -> Any:  # fmt: skip
    """The rows of `files` (at least one) as a Ray dataset of up to `blocks` blocks, each the files of one read
    task; `columns` picks columns (all by default)."""
    paths = ray.data.from_items([{PATH_COLUMN: path} for path in files], override_num_blocks=min(blocks, len(files)))
    return paths.map_batches(read_part_files, batch_format="pyarrow", batch_size=None,
                             fn_kwargs={"datasets": datasets, "columns": columns})


def read_part_files(paths: pa.Table, datasets: Datasets, columns: list[str] | None) -> pa.Table:
    """One read task: the rows of the Parquet files named in `paths`, in their order (Ray Data task)."""
    return datasets.dataset(paths.column(PATH_COLUMN).to_pylist()).to_table(columns=columns)
