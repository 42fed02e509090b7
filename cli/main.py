"""The `linklens` command: a thin shell that parses input, calls the core, formats output."""

from __future__ import annotations

import typer

from cli import crawl_commands, index_commands, mcp_command, serve_command
from cli.common import RunState, configure_logging, friendly_errors, out, settings
from ingest.settings import VERSION

app = typer.Typer(
    name="linklens",
    help="Semantic search over the articles a curated link list points to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log detail on stderr (-vv for debug)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    configure_logging(verbose)
    RunState.debug = debug


@app.command()
@friendly_errors
def path() -> None:
    """Print the data folder where linklens keeps everything it writes (set LINKLENS_DATA_DIR to move it).

    Example: linklens path
    """
    out.print(str(settings().data_dir), markup=False)


@app.command()
def version() -> None:
    """Print the linklens version."""
    out.print(VERSION)


app.command()(crawl_commands.crawl)
app.command()(crawl_commands.links)
app.command()(crawl_commands.lists)
app.command()(index_commands.index)
app.command()(index_commands.build)
app.command()(index_commands.search)
app.command(name="eval")(index_commands.eval)
app.command()(serve_command.serve)
app.command()(mcp_command.mcp)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
