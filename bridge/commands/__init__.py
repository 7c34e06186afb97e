"""One module per subcommand; each exposes run(...) -> int (the exit code)."""
