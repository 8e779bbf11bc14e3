"""Versioned train/eval protocols (TOML data files)."""
