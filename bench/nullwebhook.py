"""A webhook that allows everything and does nothing else: `python -m bench.nullwebhook PORT
CERT KEY [ANSWERS]`. Through the API server it shows what calling *any* webhook costs, apart from
fluxwarden's own work (`bench.apiserver`, configuration `null-webhook`). Loopback only.

With ANSWERS (a JSON list of `{"path", "kind", "namePrefix", "response"}`), a request that
matches an entry gets that canned response (its uid set): fluxwarden's own answers replayed
without computing them (configuration `replayed-webhook`), so the API server's cost of applying
fluxwarden's patches, warnings and audit annotations is measured apart from fluxwarden's time."""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKER = "bench: null webhook called"


class AllowAll(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server's client expects
    # One write per answer, sent at once: headers and body in separate small writes would
    # wait for the client's delayed ACK (Nagle), ~40 ms per request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    answers: list[dict[str, Any]] = []  # noqa: RUF012 - set once by main()

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        # The warning tells the benchmark the API server called this webhook.
        response: dict[str, Any] = {"allowed": True, "warnings": [MARKER]}
        if self.answers:
            response = {"allowed": True}
            for entry in self.answers:
                if (
                    entry["path"] == self.path.partition("?")[0]  # the API server adds ?timeout=
                    and entry["kind"] == request["kind"]["kind"]
                    and str(request.get("name", "")).startswith(entry["namePrefix"])
                ):
                    response = dict(entry["response"])
                    break
        response["uid"] = request["uid"]
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if len(sys.argv) > 4:
        with open(sys.argv[4], encoding="utf-8") as answers:
            AllowAll.answers = json.load(answers)
    server = ThreadingHTTPServer(("127.0.0.1", port), AllowAll)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
