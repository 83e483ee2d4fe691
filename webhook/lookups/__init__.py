"""Implementations of the engine's `Lookups`: the live cluster (kube) and a set of files (offline)."""
