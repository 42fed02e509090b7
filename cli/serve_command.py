"""`linklens serve`: the HTTP search service and search page."""

from __future__ import annotations

import typer

from cli.common import err, friendly_errors, plain, settings


@friendly_errors
def serve(
    host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1, loopback only)."),
    port: int = typer.Option(None, "--port", "-p", help="Port (default 8000, or LINKLENS_PORT)."),
    workers: int = typer.Option(
        None, "--workers", "-w", min=1, max=64,
        help="Worker processes (default 1), forked from one process that has loaded the snapshot, so they "
        "share its memory; a worker that dies is replaced. Each sheds load on its own "
        "(LINKLENS_MAX_INFLIGHT is per worker); /metrics adds them all up.",
    ),  # fmt: skip
) -> None:
    """Serve search over HTTP and a search page at http://127.0.0.1:8000/ (API docs at /docs).

    A new snapshot built by `linklens index` is picked up without a restart, by every worker.
    Health checks for a load balancer: GET or HEAD /readyz (503 until a snapshot is loaded).
    Example: linklens serve --port 8080 --workers 2
    """
    from serve.runner import run

    cfg = settings()
    address = f"http://{host or cfg.host}:{port or cfg.port}/"
    err.print(plain(f"linklens: serving {cfg.data_dir} on {address} (Ctrl-C to stop)"))
    run(cfg, host=host, port=port, workers=workers)
