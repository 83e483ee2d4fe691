"""Audit and fix: the engine run over files (offline) or over a live cluster, same evaluation path."""
