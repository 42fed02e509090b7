"""`linklens mcp`: the search tools for an assistant, as an MCP server over stdin/stdout."""

from __future__ import annotations

import anyio

from cli.common import friendly_errors, settings


@friendly_errors
def mcp() -> None:
    """Serve search to an assistant (Claude Desktop, VS Code, any MCP host) over stdio.

    The host starts this command and talks MCP on its stdin/stdout; logs go to stderr.
    Tools: search, article, similar, lists. A snapshot built later is picked up without
    a restart. Over HTTP, `linklens serve` answers the same tools at /mcp.
    Example host configuration: {"command": "linklens", "args": ["mcp"]}
    """
    from serve.mcp_server import run_stdio

    anyio.run(run_stdio, settings())
