"""The adapter registry: one module per vendor CLI, all exposing the same names."""
