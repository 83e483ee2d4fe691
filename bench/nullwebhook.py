"""A webhook that allows everything and does nothing else: `python -m bench.nullwebhook PORT
CERT KEY`. Through the API server it shows what calling *any* webhook costs, apart from
fluxwarden's own work (`bench.apiserver`, configuration `null-webhook`). Loopback only."""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = "bench: null webhook called"


class AllowAll(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server's client expects
    # One write per answer, sent at once: headers and body in separate small writes would
    # wait for the client's delayed ACK (Nagle), ~40 ms per request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                # The warning tells the benchmark the API server called this webhook.
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "warnings": [MARKER],
                },
            }
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
    server = ThreadingHTTPServer(("127.0.0.1", port), AllowAll)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
