"""The server's read-only door to the Kubernetes API: JSON GETs over urllib3, no client library.

`fluxwarden serve` makes four kinds of lookup (a Deployment, a PersistentVolumeClaim, and
Kustomizations / HelmReleases one namespace list at a time). The `kubernetes` client would cost
every pod ~22 MiB of memory for them (bench/README.md, "Memory of a serve pod"), so the server
reads the API with `RestReader`: in a pod from the ServiceAccount (token file re-read as the
kubelet rotates it, the cluster CA, `KUBERNETES_SERVICE_HOST`), elsewhere from a kubeconfig with
a client certificate, a token or a token file. A kubeconfig that needs more (an exec plugin, an
auth provider, a proxy, several files in `$KUBECONFIG`) is handed to the `kubernetes` client's
own loader (`ClientReader`), as the cluster audit uses it.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

import urllib3
import yaml

if TYPE_CHECKING:
    from kubernetes import client

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # seconds: bound ServiceAccount tokens are rotated by the kubelet
# Keep-alive connections kept per worker, as the kubernetes client sizes its pool: more
# concurrent lookups than this still run, but their connections are closed afterwards.
POOL_SIZE = (os.cpu_count() or 1) * 5
# Kubeconfig user keys `RestReader` handles; anything else goes to the kubernetes client.
_USER_KEYS = {
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
}
_CLUSTER_KEYS = {
    "server",
    "certificate-authority",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "extensions",
}


class ApiError(Exception):
    """The API server answered with a status other than 2xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class ConfigError(ValueError):
    """No usable API configuration (not in a pod, no kubeconfig, or a broken one)."""


class ApiReader(Protocol):
    """GET a path of the API and return its decoded JSON.

    Raises `ApiError` for a non-2xx answer; transport failures (timeouts, refused connections,
    TLS errors) raise whatever the transport raises, with the cause in `.reason` when wrapped.
    """

    def get(self, path: str, *, query: dict[str, str] | None = None, timeout: float) -> Any: ...


def api_path(*segments: str) -> str:
    """`/apis/apps/v1/namespaces/x/deployments/y` from its segments, each quoted."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class _Token:
    """A bearer token, fixed or read from a file that is re-read every `TOKEN_REREAD` s."""

    def __init__(
        self,
        value: str | None,
        path: Path | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._value, self._path, self._clock = value, path, clock
        self._read_at = -TOKEN_REREAD
        self._lock = threading.Lock()
        if path is not None:
            self.current()  # fail at start-up, not at the first lookup

    def current(self) -> str | None:
        if self._path is None:
            return self._value
        with self._lock:
            if self._clock() - self._read_at >= TOKEN_REREAD:
                try:
                    self._value = self._path.read_text(encoding="utf-8").strip()
                except OSError as error:
                    if self._value is None:
                        raise ConfigError(
                            f"cannot read token file {self._path}: {error}"
                        ) from error
                    # keep the last token: the file is replaced atomically, rarely missing
                self._read_at = self._clock()
            return self._value


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to authenticate to it: what a kubeconfig or a pod provides."""

    server: str
    ca_pem: bytes | None = None  # None: the system's CA store
    insecure: bool = False
    tls_server_name: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    token_file: Path | None = None
    basic_auth: tuple[str, str] | None = None


class RestReader:
    """`ApiReader` over one urllib3 pool: keep-alive connections, no retries (a lookup has a
    deadline; urllib3's default three retries would turn a 2 s timeout into 8 s)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        maxsize: int = POOL_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = credentials.server.rstrip("/")
        self._token = _Token(credentials.token, credentials.token_file, clock=clock)
        self._headers = {"Accept": "application/json", "User-Agent": "fluxwarden"}
        if credentials.basic_auth is not None:
            user, password = credentials.basic_auth
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"
        pool: dict[str, Any] = {"maxsize": maxsize, "retries": 0}
        if self.server.startswith("https://"):
            pool["ssl_context"] = _tls_context(credentials)
            if credentials.tls_server_name:
                pool["server_hostname"] = credentials.tls_server_name
                pool["assert_hostname"] = credentials.tls_server_name
            if credentials.insecure:
                pool["cert_reqs"] = ssl.CERT_NONE
                pool["assert_hostname"] = False
        elif not self.server.startswith("http://"):
            raise ConfigError(f"API server URL must be http:// or https://, got {self.server!r}")
        self._pool = urllib3.PoolManager(**pool)

    def get(self, path: str, *, query: dict[str, str] | None = None, timeout: float) -> Any:
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        headers = self._headers
        token = self._token.current()
        if token:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        response = self._pool.request(
            "GET", url, headers=headers, timeout=urllib3.Timeout(total=timeout), redirect=False
        )
        if not 200 <= response.status < 300:
            raise ApiError(response.status, response.reason or "")
        return json.loads(response.data)


def _tls_context(credentials: Credentials) -> ssl.SSLContext:
    ca = None if credentials.insecure or credentials.ca_pem is None else credentials.ca_pem
    context = ssl.create_default_context(cadata=ca.decode() if ca else None)
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
        # The ssl module loads a certificate only from files: write them where only we can read,
        # load, and remove them at once.
        with tempfile.TemporaryDirectory(prefix="fluxwarden-client-") as directory:
            cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            for path, data in (
                (cert, credentials.client_cert_pem),
                (key, credentials.client_key_pem),
            ):
                path.touch(mode=0o600)
                path.write_bytes(data)
            context.load_cert_chain(cert, key)
    return context


class ClientReader:
    """`ApiReader` over the `kubernetes` client (the cluster audit's client, exec plugins)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def get(self, path: str, *, query: dict[str, str] | None = None, timeout: float) -> Any:
        request = self.api_client.param_serialize(
            "GET",
            path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        method, url, headers = request[0], request[1], request[2]
        response = self.api_client.call_api(method, url, headers, _request_timeout=timeout)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiError(response.status, str(response.reason or ""))
        return json.loads(data or b"null")


def in_cluster_credentials(
    environ: dict[str, str] | None = None, account: Path = SERVICE_ACCOUNT
) -> Credentials | None:
    """The pod's ServiceAccount, as client-go's in-cluster config reads it; None outside a pod."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = account / "token"
    if not host or not port or not token.is_file():
        return None
    host = f"[{host}]" if ":" in host else host
    ca = account / "ca.crt"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_pem=ca.read_bytes() if ca.is_file() else None,
        token_file=token,
    )


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(str(data))
    name = entry.get(key)
    if name:
        return (base / str(name)).read_bytes()
    return None


def kubeconfig_credentials(path: Path, context: str | None = None) -> Credentials | None:
    """The credentials of `context` (default: current-context) in the kubeconfig at `path`;
    None when they need what only the kubernetes client does (exec, auth-provider, proxy)."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read kubeconfig {path}: {error}") from error

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                value = item.get(section.removesuffix("s"))
                return value if isinstance(value, dict) else {}
        raise ConfigError(f"kubeconfig {path}: no {section.removesuffix('s')} named {name!r}")

    name = context or config.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path}: no current-context and no --context")
    ctx = named("contexts", name)
    cluster = named("clusters", str(ctx.get("cluster", "")))
    user = named("users", str(ctx.get("user", ""))) if ctx.get("user") else {}
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None
    if not cluster.get("server"):
        raise ConfigError(f"kubeconfig {path}: cluster of context {name!r} has no server")
    base = path.parent
    try:
        token_file = user.get("tokenFile")
        username, password = user.get("username"), user.get("password")
        return Credentials(
            server=str(cluster["server"]),
            ca_pem=_data_or_file(cluster, "certificate-authority", base),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            tls_server_name=cluster.get("tls-server-name"),
            client_cert_pem=_data_or_file(user, "client-certificate", base),
            client_key_pem=_data_or_file(user, "client-key", base),
            token=user.get("token"),
            token_file=base / token_file if token_file else None,
            basic_auth=(str(username), str(password)) if username and password else None,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"kubeconfig {path}: {error}") from error


def load_reader(kubeconfig: str | None = None, context: str | None = None) -> ApiReader:
    """As kubectl finds the API: in a pod its ServiceAccount (unless a kubeconfig is given),
    else `kubeconfig`, `$KUBECONFIG` or `~/.kube/config`. Raises ConfigError when none works."""
    if kubeconfig is None and context is None:
        credentials = in_cluster_credentials()
        if credentials is not None:
            return RestReader(credentials)
    if kubeconfig is None:
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        if len(paths) > 1:  # merged kubeconfigs: the kubernetes client's merge rules
            return _client_reader(None, context)
        kubeconfig = paths[0] if paths else str(Path.home() / ".kube" / "config")
    path = Path(kubeconfig).expanduser()
    if not path.is_file():
        raise ConfigError(f"not in a cluster and no kubeconfig at {path}")
    credentials = kubeconfig_credentials(path, context)
    if credentials is None:
        return _client_reader(str(path), context)
    return RestReader(credentials)


def _client_reader(kubeconfig: str | None, context: str | None) -> ApiReader:
    from .lookups import load_api_client

    return ClientReader(load_api_client(kubeconfig, context, retries=0))
