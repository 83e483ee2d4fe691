"""The fluxwarden Flask app for granian: `granian --interface wsgi --factory bench.granian_app:create_app`.

Builds the app exactly as `fluxwarden serve --lookups none` does (same policy store, same JSON
decision log on stderr, same multiprocess metrics), so only the server around it differs.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from webhook.engine import NoLookups
from webhook.server.app import ServerConfig
from webhook.server.app import create_app as _create_app
from webhook.server.decisionlog import configure_logging
from webhook.server.policystore import PolicyStore

SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies" / "flux-best-practices.yaml"


def create_app() -> Flask:
    configure_logging(os.environ.get("FLUXWARDEN_LOG_LEVEL", "INFO"))
    path = Path(os.environ.get("FLUXWARDEN_POLICIES") or SHIPPED_POLICIES)
    store = PolicyStore(path)
    return _create_app(ServerConfig(policies=store, lookups=NoLookups()))
