"""Malformed requests against `fluxwarden serve` on loopback: seeded random mutations of a valid
AdmissionReview (bytes flipped, cut, spliced; values of the wrong type; keys dropped; deep
nesting) and of the HTTP request around it (method, path, content type, lengths, chunking, header
lines, version). DESIGN.md: a client's mistake gets a 4xx with a one-line JSON error, never a 5xx.

`python -m bench.fuzz [--requests N] [--seed S]`: one request per TLS connection, one after the
other; prints the status codes per mutation, the requests that got a 5xx or no answer, and
whether the server logged a traceback. Bounded: N requests, each given at most 10 s.
"""

from __future__ import annotations

import copy
import json
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
REPLY_TIMEOUT = 10.0

# Values a field of the wrong type may get. Raw JSON text, so that NaN and lone surrogates
# (valid for Python's json, not for UTF-8) reach the server as an API server never sends them.
ODD_VALUES = (
    "null", "true", "0", "-1", str(2**70), "1e308", "NaN", '""', '"\\ud800"', "[]", "{}",
    '"' + "x" * 20000 + '"', "[" * 300 + "]" * 300, '{"a":' * 300 + "1" + "}" * 300,
)  # fmt: skip
METHODS = ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "post", "TRACE")
PATHS = ("/mutate?x=1", "//mutate", "/mutate/", "/validate/../mutate", "/%00", "/" + "a" * 6000)
CONTENT_TYPES = (
    "",
    "text/plain",
    "application/json; charset=latin-1",
    "application/json-patch+json",
)


def _placeholder(rng: random.Random) -> str:
    return f"@@ODD{rng.randrange(len(ODD_VALUES))}@@"


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every value in a JSON tree."""
    found = [path]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _nodes(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _nodes(value, (*path, index))
    return found


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return tree


def _retyped(review: dict[str, Any], rng: random.Random) -> bytes:
    tree = copy.deepcopy(review)
    path = rng.choice(_nodes(tree)[1:])
    text = json.dumps(_set(tree, path, _placeholder(rng)))
    for index, odd in enumerate(ODD_VALUES):
        text = text.replace(f'"@@ODD{index}@@"', odd)
    return text.encode()


def _dropped(review: dict[str, Any], rng: random.Random) -> bytes:
    tree = copy.deepcopy(review)
    keyed = [p for p in _nodes(tree)[1:] if isinstance(p[-1], str)]
    path = rng.choice(keyed)
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return json.dumps(tree).encode()


def _bytes_mutated(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    how = rng.choice(("flip", "cut", "splice"))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    at = rng.randrange(len(data))
    if how == "cut":
        return bytes(data[:at])
    return bytes(data[:at]) + rng.randbytes(rng.randint(1, 64)) + bytes(data[at:])


def _head(method: str, path: str, headers: list[str], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _plain(body: bytes, *, method: str = "POST", path: str = "/mutate", **kw: Any) -> bytes:
    content_type = kw.get("content_type", "application/json")
    headers = [f"Content-Length: {kw.get('length', len(body))}"]
    if content_type:
        headers.append(f"Content-Type: {content_type}")
    headers += kw.get("extra", [])
    return _head(method, path, headers, kw.get("version", "HTTP/1.1")) + body


def _chunked(body: bytes, rng: random.Random) -> bytes:
    size = rng.choice((f"{len(body):x}", f"{len(body):x};ext=1", "zz", "-1", f"{len(body) + 1:x}"))
    head = _head(
        "POST", "/mutate", ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    )
    return head + size.encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"


def fuzzed_request(review: Callable[[], dict[str, Any]], rng: random.Random) -> tuple[str, bytes]:
    """One (mutation name, raw HTTP request) drawn at random."""
    good = review()
    body = json.dumps(good).encode()
    mutation = rng.choice(
        ("bytes", "retype", "drop", "deep", "method", "path", "content-type", "short-length",
         "chunked", "header-line", "version")
    )  # fmt: skip
    if mutation == "bytes":
        return mutation, _plain(_bytes_mutated(body, rng))
    if mutation == "retype":
        return mutation, _plain(_retyped(good, rng))
    if mutation == "drop":
        return mutation, _plain(_dropped(good, rng))
    if mutation == "deep":
        depth = rng.choice((100, 1000, 100_000))
        return mutation, _plain(b"[" * depth + b"]" * depth)
    if mutation == "method":
        return mutation, _plain(body, method=rng.choice(METHODS))
    if mutation == "path":
        return mutation, _plain(body, path=rng.choice(PATHS))
    if mutation == "content-type":
        return mutation, _plain(body, content_type=rng.choice(CONTENT_TYPES))
    if mutation == "short-length":
        return mutation, _plain(body, length=rng.randrange(len(body)))
    if mutation == "chunked":
        return mutation, _chunked(body, rng)
    if mutation == "header-line":
        odd = rng.choice(("NoColon", "Bad Name: x", "X: \udcff", "X-Long: " + "y" * 9000))
        return mutation, _plain(body, extra=[odd])
    return mutation, _plain(body, version=rng.choice(("HTTP/1.0", "HTTP/2.0", "HTTP/9", "HTTX")))


def exchange(port: int, context: ssl.SSLContext, request: bytes) -> str:
    """Send one request on a new TLS connection: its status code, or `no answer` / `timeout`."""
    try:
        with (
            socket.create_connection((HOST, port), timeout=REPLY_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            tls.sendall(request)
            reply = b""
            while b"\r\n" not in reply:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        return "timeout"
    except OSError:
        reply = b""  # reset: no answer
    if not reply.startswith(b"HTTP/1."):
        return "no answer"
    return reply[9:12].decode(errors="replace")


def main() -> None:
    import argparse
    import tempfile
    from pathlib import Path

    from tests.conftest import IRC_DEPLOYMENT, admission_review

    from .servers import GUNICORN, Server, issue_certs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    if not 1 <= options.requests <= 100_000:
        raise SystemExit("--requests 1..100000")
    rng = random.Random(options.seed)
    statuses: dict[str, Counter[str]] = {}
    bad: list[tuple[str, str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fluxwarden-fuzz-") as tmp:
        certs = issue_certs(Path(tmp))
        context = ssl.create_default_context(cafile=str(certs.ca))
        with Server(GUNICORN, certs, Path(tmp)) as server:
            started = time.monotonic()
            for _ in range(options.requests):
                mutation, request = fuzzed_request(lambda: admission_review(IRC_DEPLOYMENT), rng)
                status = exchange(server.port, context, request)
                statuses.setdefault(mutation, Counter())[status] += 1
                if not status[0].isdigit() or status.startswith("5"):
                    bad.append((mutation, status, request[:300]))
            elapsed = time.monotonic() - started
            alive = server.process is not None and server.process.poll() is None
            log = server.log_path.read_text(errors="replace")
    print(f"{options.requests} requests (seed {options.seed}) in {elapsed:.1f} s")
    print("| mutation | answers |\n|---|---|")
    for mutation, counts in sorted(statuses.items()):
        print(f"| {mutation} | {', '.join(f'{s}: {n}' for s, n in sorted(counts.items()))} |")
    print(f"\n5xx or no answer: {len(bad)}; server alive: {alive}; "
          f"tracebacks in its log: {log.count('Traceback')}")  # fmt: skip
    for mutation, status, head in bad[:20]:
        print(f"  {mutation}: {status}: {head!r}")


if __name__ == "__main__":
    main()
