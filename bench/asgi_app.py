"""The fluxwarden Flask app as ASGI, through a2wsgi's WSGI adapter, for uvicorn and hypercorn
(`uvicorn --factory bench.asgi_app:create_app`, `hypercorn 'bench.asgi_app:create_app()'`).

The same app as `bench.granian_app` (policy store, decision log, multiprocess metrics); only
the server and the adapter around it differ. Bench-only: neither package is a dependency.
"""

from __future__ import annotations

from typing import Any

from .granian_app import create_app as create_wsgi_app


def create_app() -> Any:
    from a2wsgi import WSGIMiddleware  # type: ignore[import-not-found,unused-ignore]

    wsgi_app: Any = create_wsgi_app()  # Flask's WSGI signature is looser than a2wsgi's stub
    return WSGIMiddleware(wsgi_app)
