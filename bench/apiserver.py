"""`python -m bench.apiserver`: what fluxwarden costs a write through the real kube-apiserver.

The project's control plane (`tests/controlplane`, built by `make controlplane`) with the Flux
CRDs; `fluxwarden serve` (1 worker as the Deployment runs it, lookups against that API server) registered with the
webhook configurations `webhook.manifests` generates from the shipped policy set. Each
*configuration* is a named set-up (a context manager: install on enter, remove on exit); rounds
run every configuration in turn (first one rotating), so drift and neighbours hit all alike.

Per configuration and round:
- latency: one writer, one keep-alive connection, every targeted apply in turn (server-side
  apply, as Flux applies), `--per-op` times each; every answer is checked for fluxwarden's
  effect (the mutation stored, or its warning) so a webhook that timed out and was ignored
  (failurePolicy Ignore) shows up as a miss, not as a fast write;
- throughput: `--writers` concurrent writers (threads, one connection each) cycling over the
  applies for `--seconds`; CPU of the API server + etcd and of fluxwarden per write.

Add a configuration: write a set-up function and append a `Configuration` to `CONFIGURATIONS`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import json
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import ControlPlane, missing_binaries
from tests.e2e.harness import WebhookServer, generated_crds, install_crds, wait_until
from webhook.manifests import Scopes, generate
from webhook.native import generate as native_policies
from webhook.native import webhook_scope
from webhook.server.policystore import load_policy_file

from . import kyverno as kyverno_peer
from .hostile import hostile_connections
from .memory import memory_mib, pod_pids
from .nullwebhook import MARKER
from .report import markdown_table, percentile
from .scenarios import (
    admission_review,
    flux_controller,
    helm_release,
    kustomization_with_dependencies,
)
from .servers import ROOT, SHIPPED_POLICIES, _group_cpu, free_port, port_in_use

JsonObject = dict[str, Any]
FIELD_MANAGER = "fluxwarden-bench"
SEQ_ANNOTATION = "bench.fluxwarden.io/seq"
INHERITED_TOLERATION = {
    "key": "bench.fluxwarden.io/tainted",
    "operator": "Exists",
    "effect": "NoSchedule",
}
SLOW = 1.0  # seconds: an admission slower than this counts in "over 1 s"
REQUEST_TIMEOUT = 15.0


# --------------------------------------------------------------------------- the API client


@dataclass
class Answer:
    status: int
    body: JsonObject
    warnings: list[str]


class ApiConnection:
    """One keep-alive HTTPS connection to the API server as the admin user; server-side apply."""

    def __init__(self, cluster: ControlPlane) -> None:
        work = cluster.workdir
        self._context = ssl.create_default_context(cafile=str(work / "ca.crt"))
        self._context.load_cert_chain(work / "admin.crt", work / "admin.key")
        self._host, _, port = cluster.server_url.removeprefix("https://").partition(":")
        self._port = int(port)
        self._conn: http.client.HTTPSConnection | None = None

    def apply(self, path: str, obj: JsonObject, *, dry_run: bool = False) -> Answer:
        query = f"?fieldManager={FIELD_MANAGER}&force=true" + ("&dryRun=All" if dry_run else "")
        body = json.dumps(obj).encode()  # JSON is YAML: the apply-patch content type takes it
        headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, context=self._context, timeout=REQUEST_TIMEOUT
                )
            try:
                self._conn.request("PATCH", path + query, body, headers)
                reply = self._conn.getresponse()
                data = reply.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue  # the API server closed an idle keep-alive connection: once more
            return Answer(reply.status, json.loads(data), reply.headers.get_all("Warning") or [])
        raise AssertionError("unreachable")

    def get_text(self, path: str) -> str:
        self.close()  # a fresh connection: simple, and this is not on a timed path
        self._conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=REQUEST_TIMEOUT
        )
        self._conn.request("GET", path)
        text = self._conn.getresponse().read().decode()
        self.close()
        return text

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------- what is written


@dataclass(frozen=True)
class TargetedApply:
    """One kind of write Flux makes; `touched`: the shipped policy set acts on it."""

    name: str
    description: str
    touched: bool
    request: Callable[[int], tuple[str, JsonObject]]  # sequence number -> (path, object)
    shows_effect: Callable[[Answer], bool]  # fluxwarden's mutation or warning is in the answer
    log_kind: str  # the decision log's `kind` and name prefix: the webhook's own time
    log_name: str
    webhook_path: str | None  # where the API server sends it (None: no webhook call)


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _fluxwarden_warned(answer: Answer) -> bool:
    return any("fluxwarden:" in warning for warning in answer.warnings)


def _with_seq(obj: JsonObject, seq: int) -> JsonObject:
    """A real write each time: the same object with a new annotation value."""
    changed = copy.deepcopy(obj)
    changed["metadata"].setdefault("annotations", {})[SEQ_ANNOTATION] = str(seq)
    return changed


def _helmrelease_create(seq: int) -> tuple[str, JsonObject]:
    obj = helm_release(interval="10m", drift=False)
    obj["metadata"]["name"] = f"podinfo-{seq}"
    return f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/apps/helmreleases/podinfo-{seq}", obj


def _controller_update(name: str, **kwargs: Any) -> Callable[[int], tuple[str, JsonObject]]:
    template = flux_controller(name, **kwargs)

    def request(seq: int) -> tuple[str, JsonObject]:
        path = f"/apis/apps/v1/namespaces/flux-system/deployments/{name}"
        return path, _with_seq(template, seq)

    return request


def _fleet_cronjob() -> JsonObject:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "fleet-cleanup-gitrepo-jobs", "namespace": "cattle-fleet-system"},
        "spec": {
            "schedule": "@daily",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {"labels": {"app": "fleet-job"}},
                        "spec": {
                            "serviceAccountName": "gitjob",
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "cleanup",
                                    "image": "rancher/fleet:v0.12.3",
                                    "command": ["fleet", "cleanup", "gitjob"],
                                }
                            ],
                            "nodeSelector": {"kubernetes.io/os": "linux"},
                            "tolerations": [
                                {
                                    "key": "cattle.io/os",
                                    "operator": "Equal",
                                    "value": "linux",
                                    "effect": "NoSchedule",
                                }
                            ],
                        },
                    },
                }
            },
        },
    }


def _fleet_cronjob_update(seq: int) -> tuple[str, JsonObject]:
    path = "/apis/batch/v1/namespaces/cattle-fleet-system/cronjobs/fleet-cleanup-gitrepo-jobs"
    return path, _with_seq(_fleet_cronjob(), seq)


def _fleet_toleration_inherited(answer: Answer) -> bool:
    spec = _dig(answer.body, "spec", "jobTemplate", "spec", "template", "spec")
    return INHERITED_TOLERATION in (_dig(spec, "tolerations") or [])


def _kustomization_create(seq: int) -> tuple[str, JsonObject]:
    obj = kustomization_with_dependencies()
    obj["metadata"] = {"name": f"apps-{seq}", "namespace": "apps"}
    return f"/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/apps/kustomizations/apps-{seq}", obj


def _configmap_update(seq: int) -> tuple[str, JsonObject]:
    obj: JsonObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "podinfo-config", "namespace": "apps"},
        "data": {"PODINFO_UI_MESSAGE": "greetings from fluxwarden's benchmark"},
    }
    return "/api/v1/namespaces/apps/configmaps/podinfo-config", _with_seq(obj, seq)


def _requeue_set(answer: Answer) -> bool:
    containers = _dig(answer.body, "spec", "template", "spec", "containers") or []
    args = [arg for c in containers for arg in c.get("args") or []]
    return any(arg.startswith("--requeue-dependency=") for arg in args)


APPLIES: tuple[TargetedApply, ...] = (
    TargetedApply(
        "helmrelease-create",
        "HelmRelease v2 create, no driftDetection (/mutate sets it)",
        True,
        _helmrelease_create,
        lambda a: _dig(a.body, "spec", "driftDetection", "mode") == "enabled",
        "helm.toolkit.fluxcd.io/v2/HelmRelease",
        "podinfo-",
        "/mutate",
    ),
    TargetedApply(
        "kustomize-controller-update",
        "kustomize-controller Deployment update, gotk-components args (/mutate adds "
        "--requeue-dependency)",
        True,
        _controller_update("kustomize-controller"),
        _requeue_set,
        "apps/v1/Deployment",
        "kustomize-controller",
        "/mutate",
    ),
    TargetedApply(
        "irc-update",
        "image-reflector-controller Deployment update, 2 replicas, 1Gi (/mutate: 1, 2Gi)",
        True,
        _controller_update("image-reflector-controller", replicas=2),
        lambda a: _dig(a.body, "spec", "replicas") == 1,
        "apps/v1/Deployment",
        "image-reflector-controller",
        "/mutate",
    ),
    TargetedApply(
        "fleet-cronjob-update",
        "Fleet cleanup CronJob update (/mutate copies fleet-controller's tolerations: a GET)",
        True,
        _fleet_cronjob_update,
        _fleet_toleration_inherited,
        "batch/v1/CronJob",
        "fleet-cleanup-gitrepo-jobs",
        "/mutate",
    ),
    TargetedApply(
        "kustomization-create",
        "Kustomization create with 3 dependsOn (/validate lists the namespace; warns: 1 missing)",
        True,
        _kustomization_create,
        _fluxwarden_warned,
        "kustomize.toolkit.fluxcd.io/v1/Kustomization",
        "apps-",
        "/validate",
    ),
    TargetedApply(
        "configmap-update",
        "ConfigMap update no policy targets (no webhook call: rules and matchConditions)",
        False,
        _configmap_update,
        _fluxwarden_warned,
        "v1/ConfigMap",
        "podinfo-config",
        None,
    ),
)


# --------------------------------------------------------------------------- configurations


@dataclass
class Bench:
    """What a configuration's set-up may use: the cluster and the running fluxwarden."""

    cluster: ControlPlane
    fluxwarden: WebhookServer
    hostile_count: int
    tree: Path | None = None  # --tree: another source tree's fluxwarden (`webhook@tree`)
    pprof: Path | None = None  # --pprof: the API server's CPU profiles go here
    kyverno: kyverno_peer.AdmissionController | None = None  # while `kyverno` is set up
    installed: set[str] = field(default_factory=set)  # one-time installs done (e.g. "kyverno")

    def webhook_configurations(
        self, url: str | None = None, *, scopes: Scopes | None = None
    ) -> list[JsonObject]:
        """The generated Mutating/ValidatingWebhookConfigurations, pointed at the local server
        (or at `url`, a server with a certificate from the same CA); `scopes`: hybrid's."""
        objects = generate(load_policy_file(SHIPPED_POLICIES), scopes=scopes)
        configs = [o for o in objects if o["kind"].endswith("WebhookConfiguration")]
        for config in configs:
            config["metadata"].pop("annotations", None)  # no cert-manager: caBundle set here
            for hook in config["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {
                    "url": f"{url or self.fluxwarden.url}{path}",
                    "caBundle": self.fluxwarden.ca_bundle,
                }
        return configs

    def apply(self, objects: Sequence[JsonObject]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    def delete(self, objects: Sequence[JsonObject]) -> None:
        self.cluster.kubectl(
            "delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(list(objects))
        )

    def fluxwarden_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.fluxwarden.certs / "ca.crt"))


@dataclass(frozen=True)
class Configuration:
    """How the cluster admits writes. `set_up` installs on enter and removes on exit;
    `expects_effect(apply)`: whether fluxwarden's effect must be in that apply's answer."""

    name: str
    description: str
    set_up: Callable[[Bench], AbstractContextManager[object]]
    expects_effect: Callable[[TargetedApply], bool]
    marker_warning: str | None = None  # a warning every targeted apply's answer must carry
    # How this configuration's effect shows in an answer, when not as `apply.shows_effect`
    # (another admission controller words its warnings its own way).
    shows_effect: Callable[[TargetedApply, Answer], bool] | None = None
    # The admission servers it runs (name -> pids), whose memory is measured each round.
    servers: Callable[[Bench], dict[str, list[int]]] = lambda bench: {}

    def as_expected(self, apply: TargetedApply, answer: Answer) -> bool:
        shown = (
            self.shows_effect(apply, answer) if self.shows_effect else apply.shows_effect(answer)
        )
        if answer.status >= 300 or shown != self.expects_effect(apply):
            return False
        if self.marker_warning is None:
            return True
        marked = any(self.marker_warning in warning for warning in answer.warnings)
        return marked == apply.touched


@contextlib.contextmanager
def no_admission(bench: Bench) -> Iterator[None]:
    yield


@contextlib.contextmanager
def fluxwarden_webhook(bench: Bench) -> Iterator[None]:
    configs = bench.webhook_configurations()
    bench.apply(configs)
    try:
        yield
    finally:
        bench.delete(configs)


@contextlib.contextmanager
def fluxwarden_webhook_hostile(bench: Bench) -> Iterator[None]:
    """The webhook while `hostile_count` hostile connections (idle TLS, slow headers, silent
    TCP, in turn) are held open against it."""
    with (
        fluxwarden_webhook(bench),
        hostile_connections(
            "127.0.0.1",
            bench.fluxwarden.port,
            bench.fluxwarden_context(),
            count=bench.hostile_count,
            duration=300,
        ),
    ):
        yield


class TreeWebhookServer(WebhookServer):
    """`fluxwarden serve` as the e2e harness starts it, from another source tree (`python -m
    webhook` finds the package in its working directory first)."""

    def __init__(self, cluster: ControlPlane, workdir: Path, tree: Path) -> None:
        super().__init__(cluster, workdir)
        self.tree = tree

    def start(self) -> TreeWebhookServer:
        with contextlib.chdir(self.tree):
            super().start()
        return self


@contextlib.contextmanager
def fluxwarden_from_tree(bench: Bench) -> Iterator[None]:
    """`webhook` with the fluxwarden of `--tree` (e.g. main, `git archive main | tar -x -C
    DIR`): the two trees compared in the same run, same API server, same neighbours."""
    if bench.tree is None:
        raise SystemExit("configuration webhook@tree needs --tree DIR")
    other = TreeWebhookServer(bench.cluster, bench.fluxwarden.workdir.parent / "tree", bench.tree)
    with _fluxwarden_instead(bench, other.start()):
        yield


@contextlib.contextmanager
def _fluxwarden_instead(bench: Bench, other: WebhookServer) -> Iterator[None]:
    """`webhook` served by `other` (started) in place of the bench's server; `other` stopped
    and the bench's server back afterwards."""
    own = bench.fluxwarden
    bench.fluxwarden = other
    try:
        with fluxwarden_webhook(bench):
            yield
    finally:
        bench.fluxwarden = own
        other.stop()


@contextlib.contextmanager
def fluxwarden_two_workers(bench: Bench) -> Iterator[None]:
    """`webhook` served by two gevent worker processes instead of the Deployment's one: what a
    second worker buys in latency and throughput, and costs in memory, in the same run."""
    other = WebhookServer(bench.cluster, bench.fluxwarden.workdir.parent / "two-workers", workers=2)
    with _fluxwarden_instead(bench, other.start()):
        yield


@contextlib.contextmanager
def _null_webhook_running(bench: Bench, *extra: str) -> Iterator[None]:
    """`bench.nullwebhook` (with `extra` arguments) registered in fluxwarden's place."""
    port = free_port()
    certs = bench.fluxwarden.certs
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.nullwebhook", str(port), str(certs / "tls.crt"),
         str(certs / "tls.key"), *extra],
        cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until("the null webhook", lambda: port_in_use(port), 10)
        configs = bench.webhook_configurations(f"https://127.0.0.1:{port}")
        bench.apply(configs)
        try:
            yield
        finally:
            bench.delete(configs)
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def null_webhook(bench: Bench) -> Iterator[None]:
    """The same webhook configurations, pointed at a server that allows everything at once
    (`bench.nullwebhook`): what the API server spends on calling a webhook at all."""
    with _null_webhook_running(bench):
        yield


def fluxwarden_answers(bench: Bench) -> list[JsonObject]:
    """fluxwarden's answer to each targeted apply (its review POSTed directly), for replay."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", bench.fluxwarden.port, context=bench.fluxwarden_context(), timeout=10
    )
    answers = []
    try:
        for apply in APPLIES:
            if apply.webhook_path is None:
                continue
            _, obj = apply.request(0)
            group, _, version = obj["apiVersion"].rpartition("/")
            review = admission_review(obj, group=group, version=version)
            review["request"]["uid"] = "replay"
            body = json.dumps(review).encode()
            conn.request("POST", apply.webhook_path, body, {"Content-Type": "application/json"})
            response = json.loads(conn.getresponse().read())["response"]
            del response["uid"]
            answers.append(
                {
                    "path": apply.webhook_path,
                    "kind": obj["kind"],
                    "namePrefix": apply.log_name,
                    "response": response,
                }
            )
    finally:
        conn.close()
    return answers


@contextlib.contextmanager
def replayed_webhook(bench: Bench) -> Iterator[None]:
    """The null webhook answering each targeted apply with fluxwarden's own answer (patch,
    warnings, audit annotations), recorded once: what fluxwarden's answers cost the API server,
    without fluxwarden's time."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as answers:
        json.dump(fluxwarden_answers(bench), answers)
    try:
        with _null_webhook_running(bench, answers.name):
            yield
    finally:
        Path(answers.name).unlink()


def _native_objects(*, hybrid: bool) -> list[JsonObject]:
    return native_policies(load_policy_file(SHIPPED_POLICIES), hybrid=hybrid)


def _wait_for_native(bench: Bench, applies: Sequence[TargetedApply]) -> None:
    """The API server loads policies asynchronously: until each apply shows its effect (dry run)."""
    connection = ApiConnection(bench.cluster)
    try:
        for apply in applies:
            path, obj = apply.request(0)
            wait_until(
                f"the native policy for {apply.name}",
                lambda: apply.shows_effect(connection.apply(path, obj, dry_run=True)),  # noqa: B023
                30,
            )
    finally:
        connection.close()


@contextlib.contextmanager
def native(bench: Bench) -> Iterator[None]:
    """Only the generated Mutating/ValidatingAdmissionPolicies (`fluxwarden manifests --native`):
    no webhook call; what needs lookups (Fleet inheritance, the dependsOn graph) is not done."""
    with _installed_native(bench, _native_objects(hybrid=False)):
        yield


@contextlib.contextmanager
def _installed_native(bench: Bench, objects: list[dict[str, Any]]) -> Iterator[None]:
    """`objects` applied until the API server enforces the native policies among them."""
    bench.apply(objects)
    try:
        _wait_for_native(bench, [a for a in APPLIES if _natively_done(a)])
        yield
    finally:
        bench.delete(objects)


@contextlib.contextmanager
def hybrid(bench: Bench) -> Iterator[None]:
    """`manifests/overlays/native`: native policies plus the webhooks narrowed to the rest."""
    objects = _native_objects(hybrid=True)
    configs = bench.webhook_configurations(
        scopes=webhook_scope(load_policy_file(SHIPPED_POLICIES), "hybrid")
    )
    with _installed_native(bench, [*objects, *configs]):
        yield


# The drift-detection mutation as an ApplyConfiguration (a merge of a typed partial object)
# instead of the generated JSONPatch: the measurement behind choosing JSONPatch.
DRIFT_APPLY_CONFIGURATION = (
    "variables.change ? Object{spec: Object.spec{driftDetection: "
    "Object.spec.driftDetection{mode: 'enabled'}}} : Object{}"
)


@contextlib.contextmanager
def native_apply_configuration(bench: Bench) -> Iterator[None]:
    """`native` with the HelmRelease mutation written as an ApplyConfiguration."""
    objects = _native_objects(hybrid=False)
    for obj in objects:
        if obj["kind"] == "MutatingAdmissionPolicy" and obj["metadata"]["name"].endswith(
            "helmrelease-drift-detection"
        ):
            obj["spec"]["mutations"] = [
                {
                    "patchType": "ApplyConfiguration",
                    "applyConfiguration": {"expression": DRIFT_APPLY_CONFIGURATION},
                }
            ]
    with _installed_native(bench, objects):
        yield


KYVERNO_START_TIMEOUT = 180.0  # seconds: its informers, certificates and webhooks


@contextlib.contextmanager
def kyverno(bench: Bench) -> Iterator[None]:
    """Kyverno's admission controller (a process on loopback, webhooks registered to it by
    URL) with the ClusterPolicies of bench/kyverno/; started and stopped each round, so that
    no other configuration runs with it."""
    cluster = bench.cluster
    if "kyverno" not in bench.installed:
        kyverno_peer.install(cluster)
        bench.installed.add("kyverno")
    controller = kyverno_peer.AdmissionController(
        cluster, bench.fluxwarden.workdir.parent / "kyverno"
    )
    controller.start()
    bench.kyverno = controller
    try:
        kyverno_peer.apply_policies(cluster, controller, KYVERNO_START_TIMEOUT)
        try:
            yield
        finally:
            kyverno_peer.delete_policies(cluster)
    finally:
        bench.kyverno = None
        controller.stop()
        controller.remove_leftovers()


KYVERNO_MISSING_DEPENDENCY = "policy kustomization-dependencies.missing-dependency-kustomization:"


def warning_text(header: str) -> str:
    """A `Warning` header's text: the API server sends `299 - "text"`."""
    code, _, rest = header.partition(" - ")
    if code.isdigit() and rest.startswith('"') and rest.endswith('"'):
        return rest[1:-1]
    return header


def kyverno_shows_effect(apply: TargetedApply, answer: Answer) -> bool:
    """The object effects are the same as fluxwarden's; Kyverno's warnings start `policy
    <policy>.<rule>: ` (the dependsOn check only warns)."""
    texts = [warning_text(w) for w in answer.warnings]
    if apply.name == "kustomization-create":
        return any(text.startswith(KYVERNO_MISSING_DEPENDENCY) for text in texts)
    if not apply.touched:
        return any(text.startswith("policy ") for text in texts)
    return apply.shows_effect(answer)


def kyverno_servers(bench: Bench) -> dict[str, list[int]]:
    process = bench.kyverno.process if bench.kyverno else None
    return {"kyverno": [process.pid]} if process else {}


def fluxwarden_servers(bench: Bench) -> dict[str, list[int]]:
    process = bench.fluxwarden.process
    return {"fluxwarden": pod_pids(process.pid)} if process else {}


def _natively_done(apply: TargetedApply) -> bool:
    """What native policies alone do: not the Fleet inheritance nor the dependsOn warning."""
    return apply.touched and apply.name not in ("fleet-cronjob-update", "kustomization-create")


def _touched(apply: TargetedApply) -> bool:
    return apply.touched


CONFIGURATIONS: list[Configuration] = [
    Configuration("none", "no admission webhooks or policies", no_admission, lambda a: False),
    Configuration(
        "null-webhook",
        "the generated configurations pointed at a webhook that only allows",
        null_webhook,
        lambda a: False,
        marker_warning=MARKER,
    ),
    Configuration(
        "replayed-webhook",
        "the null webhook replaying fluxwarden's answers (patches, warnings, audit annotations)",
        replayed_webhook,
        _touched,
    ),
    Configuration(
        "webhook",
        "fluxwarden webhook (generated configurations)",
        fluxwarden_webhook,
        _touched,
        servers=fluxwarden_servers,
    ),
    Configuration(
        "webhook-2workers",
        "fluxwarden webhook, `fluxwarden serve --workers 2`",
        fluxwarden_two_workers,
        _touched,
        servers=fluxwarden_servers,
    ),
    Configuration(
        "native",
        "native admission policies only (fluxwarden manifests --native)",
        native,
        _natively_done,
    ),
    Configuration(
        "native-applyconfig",
        "native, the HelmRelease mutation as an ApplyConfiguration instead of a JSONPatch",
        native_apply_configuration,
        _natively_done,
    ),
    Configuration(
        "hybrid",
        "native policies + webhooks for the rest (manifests/overlays/native)",
        hybrid,
        _touched,
        servers=fluxwarden_servers,
    ),
    Configuration(
        "kyverno",
        "Kyverno v1.19.1's admission controller with the ClusterPolicies of bench/kyverno/",
        kyverno,
        _touched,
        shows_effect=kyverno_shows_effect,
        servers=kyverno_servers,
    ),
    Configuration(
        "webhook@tree",
        "fluxwarden from --tree DIR (e.g. main), generated configurations",
        fluxwarden_from_tree,
        _touched,
    ),
    Configuration(
        "webhook+hostile",
        "fluxwarden webhook, hostile connections open against it",
        fluxwarden_webhook_hostile,
        _touched,
        servers=fluxwarden_servers,
    ),
]
BASELINE = "none"
DIRECT = "direct"  # not a configuration: fluxwarden called without the API server


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    seconds: float
    effect_as_expected: bool
    status: int


@dataclass
class Result:
    """Everything measured for one configuration, all rounds pooled."""

    latency: dict[str, list[Sample]] = field(default_factory=dict)
    writes: int = 0
    write_seconds: float = 0.0
    write_errors: int = 0
    rates: list[float] = field(default_factory=list)
    apiserver_cpu: float = 0.0
    fluxwarden_cpu: float = 0.0
    webhook_calls: float = 0.0
    targeted_writes: int = 0
    # The API server's webhook call time (its metric) during the latency phases, per webhook.
    api_webhook_seconds: dict[str, float] = field(default_factory=dict)
    api_webhook_calls: dict[str, float] = field(default_factory=dict)
    in_app_ms: dict[str, list[float]] = field(default_factory=dict)
    # Connections fluxwarden accepted over the latency phases (its fluxwarden_connections_total).
    connections: float | None = None
    latency_writes: int = 0  # every apply of the latency phases, targeted or not
    # Requests the API server served during the latency phases besides the bench's own, per
    # `VERB resource`: what admission (and anything running meanwhile) asked of it.
    api_requests: dict[str, float] = field(default_factory=dict)
    # Per server (an admission server, kube-apiserver, etcd): (PSS, RSS) MiB after each round.
    memory: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


class SequenceNumbers:
    """Unique sequence numbers for names and annotations, shared by all writers."""

    def __init__(self) -> None:
        self._next = 1
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next


def wait_for_effect(bench: Bench, config: Configuration, timeout: float = 60.0) -> None:
    """Until a dry-run of every apply shows the effect the configuration promises, 3 times in a
    row (the API server picks up admission configuration changes asynchronously)."""
    conn = ApiConnection(bench.cluster)
    streak = 0
    mismatch = ""

    def settled() -> bool:
        nonlocal streak, mismatch
        for apply in APPLIES:
            path, obj = apply.request(0)
            answer = conn.apply(path, obj, dry_run=True)
            if not config.as_expected(apply, answer):
                streak, mismatch = 0, f"{apply.name}: {answer.status} {answer.warnings}"
                return False
        streak += 1
        return streak >= 3

    try:
        wait_until(f"{config.name} in effect", settled, timeout)
    except TimeoutError as error:
        raise TimeoutError(f"{error} (last: {mismatch})") from error
    finally:
        conn.close()


def measure_latency(
    bench: Bench, config: Configuration, seq: SequenceNumbers, per_op: int, result: Result
) -> None:
    conn = ApiConnection(bench.cluster)
    try:
        for _ in range(per_op):
            for apply in APPLIES:
                path, obj = apply.request(seq.take())
                started = time.perf_counter()
                answer = conn.apply(path, obj)
                seconds = time.perf_counter() - started
                result.latency.setdefault(apply.name, []).append(
                    Sample(seconds, config.as_expected(apply, answer), answer.status)
                )
    finally:
        conn.close()


def measure_direct(bench: Bench, seq: SequenceNumbers, per_op: int, result: Result) -> None:
    """The same objects as CREATE AdmissionReviews POSTed straight to fluxwarden (one client,
    keep-alive TLS): the webhook's share of the added latency, without the API server."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", bench.fluxwarden.port, context=bench.fluxwarden_context(), timeout=10
    )
    try:
        for _ in range(per_op):
            for apply in APPLIES:
                if apply.webhook_path is None:
                    continue
                _, obj = apply.request(seq.take())
                group, _, version = obj["apiVersion"].rpartition("/")
                review = admission_review(obj, group=group, version=version)
                review["request"]["uid"] = f"direct-{seq.take()}"
                body = json.dumps(review).encode()
                started = time.perf_counter()
                conn.request("POST", apply.webhook_path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                seconds = time.perf_counter() - started
                result.latency.setdefault(apply.name, []).append(
                    Sample(seconds, reply.status == 200, reply.status)
                )
    finally:
        conn.close()


WEBHOOK_DURATION = "apiserver_admission_webhook_admission_duration_seconds"
CONNECTIONS = "fluxwarden_connections_total"
REQUESTS = "apiserver_request_total"


def apiserver_counters(
    cluster: ControlPlane,
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """`parse_metrics` of one read of the API server's `/metrics`."""
    return parse_metrics(ApiConnection(cluster).get_text("/metrics"))


def parse_metrics(text: str) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """The API server's own account of its webhook calls, (seconds, calls) per webhook name
    summed over operation/type/rejected; and of the requests it served, per
    `VERB resource[/subresource][.group]` (`apiserver_request_total`, summed over codes)."""
    webhooks: dict[str, tuple[float, float]] = {}
    requests: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(REQUESTS + "{"):
            labels, _, value = line.rpartition(" ")
            key = request_key(_label(labels, "verb"), _label(labels, "group"),
                              _label(labels, "resource"), _label(labels, "subresource"))  # fmt: skip
            requests[key] = requests.get(key, 0.0) + float(value)
        for suffix, index in (("_sum{", 0), ("_count{", 1)):
            if line.startswith(WEBHOOK_DURATION + suffix):
                labels, _, value = line.rpartition(" ")
                name = _label(labels, "name")
                pair = list(webhooks.get(name, (0.0, 0.0)))
                pair[index] += float(value)
                webhooks[name] = (pair[0], pair[1])
    return webhooks, requests


_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def _label(labels: str, name: str) -> str:
    """The value of label `name` in a Prometheus sample's `{a="x",b="y"}` ("" if absent)."""
    values: dict[str, str] = dict(_LABEL.findall(labels))
    return values.get(name, "")


def request_key(verb: str, group: str, resource: str, subresource: str) -> str:
    what = (resource or "(non-resource)") + (
        f"/{subresource}".replace("//", "/") if subresource else ""
    )
    return f"{verb} {what}{f'.{group}' if group else ''}"


def own_requests(per_op: int) -> dict[str, float]:
    """The requests of one latency phase the bench makes itself: every apply `per_op` times
    (a server-side apply, counted as verb APPLY), and the first of its two `/metrics` reads."""
    own = {request_key("GET", "", "", ""): 1.0}
    for apply in APPLIES:
        path, _ = apply.request(0)
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        key = request_key("APPLY", group, parts[-2], "")
        own[key] = own.get(key, 0.0) + per_op
    return own


def _control_plane_pids(cluster: ControlPlane) -> list[int]:
    """etcd and kube-apiserver: the processes whose command line names the cluster's work dir."""
    marker = str(cluster.workdir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def measure_throughput(
    bench: Bench,
    seq: SequenceNumbers,
    *,
    writers: int,
    seconds: float,
    result: Result,
    control_plane_pids: list[int],
    profile_to: Path | None = None,
) -> None:
    done = [0] * writers
    errors = [0] * writers
    start = threading.Barrier(writers + 1 + (profile_to is not None))
    stop_at = [0.0]

    def write(index: int) -> None:
        conn = ApiConnection(bench.cluster)
        start.wait()
        turn = index
        try:
            while time.monotonic() < stop_at[0]:
                apply = APPLIES[turn % len(APPLIES)]
                turn += 1
                path, obj = apply.request(seq.take())
                try:
                    answer = conn.apply(path, obj)
                except (OSError, http.client.HTTPException):
                    errors[index] += 1
                    continue
                if answer.status < 300:
                    done[index] += 1
                else:
                    errors[index] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
    if profile_to is not None:
        threads.append(
            threading.Thread(
                target=_cpu_profile, args=(bench, profile_to, seconds, start), daemon=True
            )
        )
    for thread in threads:
        thread.start()
    # The admission server's CPU: Kyverno's while it runs, else fluxwarden's.
    server = bench.kyverno.process if bench.kyverno else bench.fluxwarden.process
    fluxwarden_pgid = server.pid if server else 0
    cp_before = sum(_group_cpu(pid) for pid in control_plane_pids)
    fw_before = _group_cpu(fluxwarden_pgid)
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 5)
    elapsed = time.monotonic() - began
    result.apiserver_cpu += sum(_group_cpu(pid) for pid in control_plane_pids) - cp_before
    result.fluxwarden_cpu += _group_cpu(fluxwarden_pgid) - fw_before
    result.writes += sum(done)
    result.write_errors += sum(errors)
    result.write_seconds += elapsed
    result.rates.append(sum(done) / elapsed)


def _cpu_profile(bench: Bench, path: Path, seconds: float, start: threading.Barrier) -> None:
    """The API server's CPU profile (pprof) over the throughput phase (`--pprof`)."""
    work = bench.cluster.workdir
    context = ssl.create_default_context(cafile=str(work / "ca.crt"))
    context.load_cert_chain(work / "admin.crt", work / "admin.key")
    host, _, port = bench.cluster.server_url.removeprefix("https://").partition(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=seconds + 30)
    start.wait()
    try:
        conn.request("GET", f"/debug/pprof/profile?seconds={max(1, round(seconds))}")
        reply = conn.getresponse()
        path.write_bytes(reply.read())
    finally:
        conn.close()


def _decision_records(log: Path, offset: int) -> tuple[list[JsonObject], int]:
    with log.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        if b'"durationMs"' in line:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records, offset + end


def run(
    bench: Bench,
    configs: Sequence[Configuration],
    *,
    rounds: int,
    per_op: int,
    writers: int,
    seconds: float,
) -> dict[str, Result]:
    results = {config.name: Result() for config in configs}
    results[DIRECT] = Result()
    seq = SequenceNumbers()
    pids = _control_plane_pids(bench.cluster)
    for round_index in range(rounds):
        shift = round_index % len(configs)
        for config in [*configs[shift:], *configs[:shift]]:
            result = results[config.name]
            with config.set_up(bench):
                wait_for_effect(bench, config)
                measure_round_latency(bench, config, seq, per_op, result)
                measure_throughput(
                    bench,
                    seq,
                    writers=writers,
                    seconds=seconds,
                    result=result,
                    control_plane_pids=pids,
                    profile_to=bench.pprof / f"{config.name}-round{round_index + 1}.pprof"
                    if bench.pprof
                    else None,
                )
                measure_memory(bench, config, pids, result)
            print(
                f"round {round_index + 1}/{rounds} {config.name}: {result.rates[-1]:.0f} writes/s",
                file=sys.stderr,
                flush=True,
            )
        measure_direct(bench, seq, per_op, results[DIRECT])
    return results


def measure_round_latency(
    bench: Bench, config: Configuration, seq: SequenceNumbers, per_op: int, result: Result
) -> None:
    """The latency phase, with what fluxwarden and the API server counted meanwhile."""
    calls_before = bench.fluxwarden.metric_total("fluxwarden_admission_requests_total")
    connections_before = bench.fluxwarden.metric_total(CONNECTIONS)
    offset = bench.fluxwarden.log.stat().st_size
    webhooks_before, requests_before = apiserver_counters(bench.cluster)
    measure_latency(bench, config, seq, per_op, result)
    webhooks_after, requests_after = apiserver_counters(bench.cluster)
    for name, (seconds_after, calls_after) in webhooks_after.items():
        seconds_before, calls_before_ = webhooks_before.get(name, (0.0, 0.0))
        result.api_webhook_seconds[name] = (
            result.api_webhook_seconds.get(name, 0.0) + seconds_after - seconds_before
        )
        result.api_webhook_calls[name] = (
            result.api_webhook_calls.get(name, 0.0) + calls_after - calls_before_
        )
    # Besides the bench's own writes and its first /metrics read: what admission asked for.
    own = own_requests(per_op)
    for key, count in requests_after.items():
        extra = count - requests_before.get(key, 0.0) - own.get(key, 0.0)
        if extra:
            result.api_requests[key] = result.api_requests.get(key, 0.0) + extra
    time.sleep(0.3)  # the last decision-log lines reach the file
    calls = bench.fluxwarden.metric_total("fluxwarden_admission_requests_total")
    result.webhook_calls += calls - calls_before
    # minus the two /metrics reads of this bookkeeping
    connections_after = bench.fluxwarden.metric_total(CONNECTIONS)
    if connections_after:  # 0: a fluxwarden without the metric (an older tree)
        connected = connections_after - connections_before
        result.connections = (result.connections or 0.0) + max(connected - 2, 0)
    result.targeted_writes += per_op * sum(a.touched for a in APPLIES)
    result.latency_writes += per_op * len(APPLIES)
    records, _ = _decision_records(bench.fluxwarden.log, offset)
    for apply in APPLIES:
        result.in_app_ms.setdefault(apply.name, []).extend(
            r["durationMs"]
            for r in records
            if r.get("kind") == apply.log_kind
            and str(r.get("name", "")).startswith(apply.log_name)
            and not r.get("dryRun")
        )


def measure_memory(
    bench: Bench, config: Configuration, control_plane_pids: list[int], result: Result
) -> None:
    """PSS and RSS of the configuration's admission servers and of the API server and etcd,
    after the throughput phase (their working set under load)."""
    servers = dict(config.servers(bench))
    for pid in control_plane_pids:
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            if name in ("kube-apiserver", "etcd"):  # not a server given the kubeconfig path
                servers.setdefault(name, []).append(pid)
    for server, pids in servers.items():
        pss = rss = 0.0
        for pid in pids:
            with contextlib.suppress(OSError, KeyError):  # a worker that just exited
                pid_pss, pid_rss = memory_mib(pid)
                pss, rss = pss + pid_pss, rss + pid_rss
        result.memory.setdefault(server, []).append((pss, rss))


# --------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def latency_table(results: dict[str, Result], configs: Sequence[Configuration]) -> str:
    base = results[BASELINE]
    header = ["apply", "configuration", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"]
    header += ["in-app p50 ms", "direct p50 ms", "over 1 s", "n", "effect missing/unexpected"]
    rows = []
    for apply in APPLIES:
        base_values = [s.seconds for s in base.latency.get(apply.name, [])]
        base_p50, base_p99 = percentile(base_values, 50), percentile(base_values, 99)
        for config in configs:
            samples = results[config.name].latency.get(apply.name, [])
            values = [s.seconds for s in samples]
            p50, p99 = percentile(values, 50), percentile(values, 99)
            in_app = results[config.name].in_app_ms.get(apply.name, [])
            direct = [s.seconds for s in results[DIRECT].latency.get(apply.name, [])]
            show_direct = bool(direct) and config.name != BASELINE
            rows.append(
                [
                    apply.name,
                    config.name,
                    _ms(p50),
                    _ms(p99),
                    "" if config.name == BASELINE else f"{(p50 - base_p50) * 1000:+.1f}",
                    "" if config.name == BASELINE else f"{(p99 - base_p99) * 1000:+.1f}",
                    f"{percentile(in_app, 50):.2f}" if in_app else "",
                    _ms(percentile(direct, 50)) if show_direct else "",
                    str(sum(v > SLOW for v in values)),
                    str(len(values)),
                    str(sum(not s.effect_as_expected for s in samples)),
                ]
            )
    return markdown_table(header, rows)


def throughput_table(results: dict[str, Result], configs: Sequence[Configuration]) -> str:
    base = results[BASELINE]
    base_rate = base.writes / base.write_seconds if base.write_seconds else 0.0
    header = ["configuration", "writes/s", "x none", "rounds writes/s", "errors"]
    header += ["API server+etcd CPU ms/write", "admission server CPU ms/write"]
    header += ["webhook calls per targeted write", "connections per webhook call"]
    header += ["API requests per write"]
    rows = []
    for config in configs:
        result = results[config.name]
        rate = result.writes / result.write_seconds if result.write_seconds else 0.0
        per_write = 1000 / result.writes if result.writes else 0.0
        rows.append(
            [
                config.name,
                f"{rate:.0f}",
                f"{rate / base_rate:.2f}x" if base_rate else "",
                ", ".join(f"{r:.0f}" for r in result.rates),
                str(result.write_errors),
                f"{result.apiserver_cpu * per_write:.2f}",
                f"{result.fluxwarden_cpu * per_write:.2f}",
                f"{result.webhook_calls / result.targeted_writes:.2f}"
                if result.targeted_writes
                else "",
                f"{result.connections / result.webhook_calls:.3f}"
                if result.webhook_calls and result.connections is not None
                else "",
                f"{sum(result.api_requests.values()) / result.latency_writes:.2f}"
                if result.latency_writes
                else "",
            ]
        )
    return markdown_table(header, rows, text_columns=1)


def api_request_table(results: dict[str, Result], configs: Sequence[Configuration]) -> str:
    """What the API server served during the latency phases besides the bench's own writes,
    per write, by verb and resource (the most frequent; background work like leases too)."""
    header = ["configuration", "requests per write", "most frequent (per write)"]
    rows = []
    for config in configs:
        result = results[config.name]
        if not result.latency_writes:
            continue
        per_write = {k: v / result.latency_writes for k, v in result.api_requests.items()}
        top = sorted(per_write.items(), key=lambda item: -item[1])[:6]
        rows.append(
            [
                config.name,
                f"{sum(per_write.values()):.2f}",
                ", ".join(f"{key} {value:.2f}" for key, value in top if value >= 0.005),
            ]
        )
    return markdown_table(header, rows, text_columns=1)


def memory_table(results: dict[str, Result], configs: Sequence[Configuration]) -> str:
    """Each server's PSS and RSS after each round's throughput phase (median over rounds)."""
    header = ["configuration", "server", "PSS MiB", "RSS MiB", "rounds PSS MiB"]
    rows = []
    for config in configs:
        for server, samples in sorted(results[config.name].memory.items()):
            rows.append(
                [
                    config.name,
                    server,
                    f"{statistics.median(p for p, _ in samples):.0f}",
                    f"{statistics.median(r for _, r in samples):.0f}",
                    ", ".join(f"{p:.0f}" for p, _ in samples),
                ]
            )
    return markdown_table(header, rows, text_columns=2)


def webhook_call_table(results: dict[str, Result], configs: Sequence[Configuration]) -> str:
    """Mean duration of the API server's call to each webhook, by its own metric."""
    header = ["configuration", "webhook", "calls", "API server's call mean ms"]
    rows = []
    for config in configs:
        result = results[config.name]
        for name in sorted(result.api_webhook_calls):
            calls = result.api_webhook_calls[name]
            if calls:
                mean = result.api_webhook_seconds[name] / calls * 1000
                rows.append([config.name, name, f"{calls:.0f}", f"{mean:.2f}"])
    if not rows:  # e.g. only native policies: no webhook was called
        return "(no webhook calls)"
    return markdown_table(header, rows)


def to_json(results: dict[str, Result]) -> JsonObject:
    return {
        name: {
            "latency_seconds": {
                op: [s.seconds for s in samples] for op, samples in result.latency.items()
            },
            "effect_missing": {
                op: sum(not s.effect_as_expected for s in samples)
                for op, samples in result.latency.items()
            },
            "writes": result.writes,
            "write_seconds": result.write_seconds,
            "write_errors": result.write_errors,
            "rates": result.rates,
            "apiserver_cpu_seconds": result.apiserver_cpu,
            "fluxwarden_cpu_seconds": result.fluxwarden_cpu,
            "webhook_calls": result.webhook_calls,
            "targeted_writes": result.targeted_writes,
            "latency_writes": result.latency_writes,
            "api_requests": result.api_requests,
            "memory_mib_pss_rss": result.memory,
        }
        for name, result in results.items()
    }


# --------------------------------------------------------------------------- set-up and CLI


def crds() -> list[Path]:
    """The CRDs controller-gen generated from Flux's API modules (`make controlplane`)."""
    return [p for p in generated_crds() if "toolkit.fluxcd.io" in p.name]


def seed(bench: Bench) -> None:
    """Namespaces, the objects the lookups read, and a first version of every updated object
    (so that the timed updates are updates), all before any admission is configured."""
    bench.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in ("flux-system", "apps", "cattle-fleet-system")
        ]
    )
    fleet_controller = flux_controller("fleet-controller")
    fleet_controller["metadata"] = {"name": "fleet-controller", "namespace": "cattle-fleet-system"}
    fleet_controller["spec"]["template"]["spec"]["tolerations"] = [INHERITED_TOLERATION]
    infra = kustomization_with_dependencies()
    infra["metadata"] = {"name": "infra-controllers", "namespace": "apps"}
    del infra["spec"]["dependsOn"]
    infra_configs = copy.deepcopy(infra)
    infra_configs["metadata"]["name"] = "infra-configs"
    bench.apply([fleet_controller, infra, infra_configs])
    conn = ApiConnection(bench.cluster)
    try:
        for apply in APPLIES:
            path, obj = apply.request(1)
            answer = conn.apply(path, obj)
            if answer.status >= 300:
                raise RuntimeError(f"seeding {apply.name}: {answer.status} {answer.body}")
    finally:
        conn.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.apiserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-op", type=int, default=40, help="timed writes per apply per round")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (throughput)")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput phase per round")
    parser.add_argument("--hostile", type=int, default=256, help="hostile connections")
    parser.add_argument(
        "--configurations",
        help=f"comma-separated, from {[c.name for c in CONFIGURATIONS]} ({BASELINE} always "
        "runs; default: all, webhook@tree only with --tree)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument(
        "--tree", type=Path, help="another source tree, for the webhook@tree configuration"
    )
    parser.add_argument(
        "--pprof",
        type=Path,
        help="API server started with --profiling=true; its CPU profile of each throughput "
        "phase is written here (`go tool pprof -top FILE`)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.per_op <= 500 or not 1 <= args.writers <= 64:
        raise SystemExit("--rounds 1..20, --per-op 1..500, --writers 1..64")
    if not 0 < args.seconds <= 30 or not 0 <= args.hostile <= 1024:
        raise SystemExit("--seconds (0, 30], --hostile 0..1024")
    if args.configurations is None:
        args.configurations = ",".join(
            c.name for c in CONFIGURATIONS if args.tree or c.name != "webhook@tree"
        )
    wanted = {BASELINE, *args.configurations.split(",")}
    unknown = wanted - {c.name for c in CONFIGURATIONS}
    if unknown:
        raise SystemExit(f"unknown configurations: {sorted(unknown)}")
    if missing_binaries():
        raise SystemExit(f"missing {missing_binaries()}: run `make controlplane`")
    if "kyverno" in wanted and kyverno_peer.missing():
        raise SystemExit(
            f"missing Kyverno {kyverno_peer.missing()}: run tests/controlplane/kyverno/build.sh"
        )
    configs = [c for c in CONFIGURATIONS if c.name in wanted]
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fluxwarden-bench-api-") as tmp,
        ControlPlane(
            # bench-only: the harness disables profiling; a later flag wins
            extra_apiserver_args=["--profiling=true"] if args.pprof else [],
        ) as cluster,
    ):
        install_crds(cluster, *crds())
        server = WebhookServer(cluster, Path(tmp) / "fluxwarden").start()
        if args.pprof:
            args.pprof.mkdir(parents=True, exist_ok=True)
        try:
            bench = Bench(cluster, server, args.hostile, tree=args.tree, pprof=args.pprof)
            seed(bench)
            results = run(
                bench,
                configs,
                rounds=args.rounds,
                per_op=args.per_op,
                writers=args.writers,
                seconds=args.seconds,
            )
        finally:
            server.stop()
    print(f"\n## Through the kube-apiserver ({time.monotonic() - started:.0f} s)\n")
    for apply in APPLIES:
        print(f"- `{apply.name}`: {apply.description}")
    print(
        f"\n{args.rounds} rounds x {args.per_op} writes per apply, one writer; "
        f"throughput: {args.writers} writers x {args.seconds:.0f} s per round; "
        f"hostile connections: {args.hostile}\n"
    )
    print(latency_table(results, configs))
    print()
    print(throughput_table(results, configs))
    print()
    print(webhook_call_table(results, configs))
    print()
    print(api_request_table(results, configs))
    print()
    print(memory_table(results, configs))
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
