"""`vectors.npy` written as batches arrive: a float32 matrix whose row count is known only at the end.

Why not `np.save` once: that needs the whole matrix in memory (1.5 GB at a million
384-d passages). The file starts with a fixed-size header slot; rows are appended
as they come, and `finish` writes the real .npy header (version 1.0, padded to
HEADER_BYTES) into the slot. Any .npy reader, `np.load(..., mmap_mode="r")`
included, reads the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Room for the .npy magic, version, length and the header dict of any 2-d shape.
HEADER_BYTES = 128
MAGIC = b"\x93NUMPY\x01\x00"


class VectorFileWriter:
    """Append float32 row blocks of one width; `finish` returns (rows, dimension)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in finish/abort
        self._file.write(b"\0" * HEADER_BYTES)
        self._rows = 0
        self._dimension: int | None = None

    def append(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.ndim != 2:
            raise ValueError(f"vectors must be a 2-d array, got shape {block.shape}")
        if self._dimension is None:
            self._dimension = int(block.shape[1])
        elif block.shape[1] != self._dimension:
            raise ValueError(f"vectors of width {block.shape[1]} after width {self._dimension}")
        block.tofile(self._file)
        self._rows += int(block.shape[0])

    def finish(self) -> tuple[int, int]:
        dimension = self._dimension or 0
        header = repr({"descr": "<f4", "fortran_order": False, "shape": (self._rows, dimension)}).encode("latin1")
        room = HEADER_BYTES - len(MAGIC) - 2
        body = header.ljust(room - 1) + b"\n"
        self._file.seek(0)
        self._file.write(MAGIC + len(body).to_bytes(2, "little") + body)
        self._file.close()
        return self._rows, dimension

    def abort(self) -> None:
        self._file.close()
