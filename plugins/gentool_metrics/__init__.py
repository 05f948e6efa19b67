"""Built-in gentool plugin (components arrive with their issue)."""
