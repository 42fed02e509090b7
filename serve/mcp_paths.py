"""Where `linklens serve` answers MCP: shared by the deferred route and the SDK's endpoint behind it."""

MCP_PATH = "/mcp"
