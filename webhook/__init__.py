"""fluxwarden: admission webhook and audit tool for Flux CD operational best practices."""

__version__ = "0.1.0"
