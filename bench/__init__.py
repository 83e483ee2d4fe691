"""Load benchmark for the fluxwarden admission webhook (`python -m bench`, see bench/README.md).

Loopback only and bounded: every run has a fixed number of client connections, a fixed duration
per scenario and a per-connection request cap; every server it starts is stopped at the end.
"""
