"""`tui-agent mcp serve`: tui-agent itself as an MCP server (stdio), over the service API only.

Named `mcp_server` so that it never shadows the `mcp` package (the SDK) it is built on.
"""
