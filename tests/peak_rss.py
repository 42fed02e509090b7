"""Run the `linklens` command in this process, then write this process's peak RSS (bytes) to a file.

    python -m tests.peak_rss OUT_FILE crawl LIST --json

Why in-process and not sampled from outside: `getrusage(RUSAGE_SELF).ru_maxrss` is the kernel's exact
peak of the crawling process (its extraction workers are processes of their own, not counted), so a
spike as short as one decompress call cannot slip between two samples.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from cli.main import app

if __name__ == "__main__":
    out = Path(sys.argv[1])
    try:
        app(sys.argv[2:], prog_name="linklens")
    finally:
        out.write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))  # Linux: KiB
