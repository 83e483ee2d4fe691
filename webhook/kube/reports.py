"""PolicyReports from a cluster audit: what `kubectl get policyreports -A` and Policy Reporter show.

One report per namespace named `fluxwarden` (a ClusterPolicyReport for cluster-scoped objects),
labelled `app.kubernetes.io/managed-by: fluxwarden`, rewritten in place on every run: results are
replaced wholesale, so a fixed object's result turns to pass and a deleted object's disappears.
Reports of namespaces left without results are deleted. `wgpolicyk8s.io/v1alpha2` (PolicyReport,
ClusterPolicyReport) or its successor `openreports.io/v1alpha1` (Report, ClusterReport).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..audit.findings import AuditReport, Finding, ObjectLocation
from ..engine import JsonObject

ReportFormat = Literal["wgpolicyk8s", "openreports"]

REPORT_NAME = "fluxwarden"
SOURCE = "fluxwarden"
CATEGORY = "Flux best practices"
MANAGED_BY = ("app.kubernetes.io/managed-by", "fluxwarden")
# etcd refuses objects over 1.5 MiB: a namespace with thousands of results is split into
# `fluxwarden`, `fluxwarden-2`, ... each under this many bytes of results.
MAX_RESULT_BYTES = 1_000_000
RESULTS = ("pass", "fail", "warn", "error", "skip")
_TIMEOUT = (10, 60)


class ReportWriteError(Exception):
    """A report could not be written (CRD missing, forbidden, API error): one line, exit 2."""


@dataclass(frozen=True)
class ClusterObjectLocation(ObjectLocation):
    """An object read from the cluster: its uid goes into the report's resource reference."""

    uid: str = ""


@dataclass(frozen=True)
class ReportApi:
    group: str
    version: str
    plural: str
    kind: str
    cluster_plural: str
    cluster_kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


REPORT_APIS: dict[ReportFormat, ReportApi] = {
    "wgpolicyk8s": ReportApi(
        "wgpolicyk8s.io",
        "v1alpha2",
        "policyreports",
        "PolicyReport",
        "clusterpolicyreports",
        "ClusterPolicyReport",
    ),
    "openreports": ReportApi(
        "openreports.io", "v1alpha1", "reports", "Report", "clusterreports", "ClusterReport"
    ),
}


def _reference(location: ObjectLocation) -> JsonObject:
    ref: JsonObject = {
        "apiVersion": location.api_version,
        "kind": location.kind,
        "name": location.name,
    }
    if location.namespace:
        ref["namespace"] = location.namespace
    uid = getattr(location, "uid", "")
    if uid:
        ref["uid"] = uid
    return ref


def result_of(finding: Finding, *, timestamp: JsonObject) -> JsonObject:
    """One report result; `rule` is the policy (a fluxwarden policy has one rule)."""
    message = "; ".join(finding.messages) or ("compliant" if finding.result == "pass" else "")
    return {
        "source": SOURCE,
        "policy": finding.policy,
        "rule": finding.policy,
        "category": CATEGORY,
        "result": finding.result,
        "scored": True,
        "message": message,
        "timestamp": timestamp,
        "resources": [_reference(finding.location)],
        "properties": {"mode": finding.mode, "action": finding.action},
    }


def summary_of(results: list[JsonObject]) -> dict[str, int]:
    counts = dict.fromkeys(RESULTS, 0)
    for result in results:
        counts[result["result"]] += 1
    return counts


def _chunks(results: list[JsonObject]) -> Iterator[list[JsonObject]]:
    chunk: list[JsonObject] = []
    size = 0
    for result in results:
        length = len(json.dumps(result))
        if chunk and size + length > MAX_RESULT_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(result)
        size += length
    if chunk:
        yield chunk


def _name(index: int) -> str:
    return REPORT_NAME if index == 0 else f"{REPORT_NAME}-{index + 1}"


def build_reports(
    report: AuditReport, *, api: ReportApi, namespace: str | None = None, now_ns: int | None = None
) -> Iterator[tuple[str, list[JsonObject]]]:
    """(namespace, the report objects to store there), "" for cluster-scoped objects.

    Built one namespace at a time, so only one namespace's results are held as JSON at once.
    With `namespace`, only that namespace's.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    timestamp = {"seconds": now_ns // 1_000_000_000, "nanos": now_ns % 1_000_000_000}
    by_namespace: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        if namespace is None or finding.location.namespace == namespace:
            by_namespace[finding.location.namespace].append(finding)
    for ns in sorted(by_namespace):
        findings = sorted(
            by_namespace.pop(ns), key=lambda f: (f.location.kind, f.location.name, f.policy)
        )
        results = [result_of(f, timestamp=timestamp) for f in findings]
        yield (
            ns,
            [
                _report_object(api, ns, _name(index), chunk)
                for index, chunk in enumerate(_chunks(results))
            ],
        )


def _report_object(
    api: ReportApi, namespace: str, name: str, results: list[JsonObject]
) -> JsonObject:
    metadata: JsonObject = {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}}
    if namespace:
        metadata["namespace"] = namespace
    body: JsonObject = {
        "apiVersion": api.api_version,
        "kind": api.kind if namespace else api.cluster_kind,
        "metadata": metadata,
        "summary": summary_of(results),
        "results": results,
    }
    if api.group == "openreports.io":
        body["source"] = SOURCE  # openreports names the producing engine at the report level
    return body


class _Store:
    """Create-or-update, list and delete reports with the CustomObjectsApi."""

    def __init__(self, api_client: client.ApiClient, api: ReportApi) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self.api = api

    def _kind(self, namespace: str) -> str:
        return self.api.kind if namespace else self.api.cluster_kind

    def _fail(self, verb: str, what: str, error: ApiException) -> ReportWriteError:
        hint = ": is its CRD installed?" if error.status == 404 else ""
        return ReportWriteError(
            f"cannot {verb} {what} ({self.api.api_version}): {error.status} {error.reason}{hint}"
        )

    def _what(self, namespace: str, name: str) -> str:
        return (
            f"{self._kind(namespace)} {namespace}/{name}"
            if namespace
            else f"{self._kind(namespace)} {name}"
        )

    def put(self, namespace: str, body: JsonObject) -> None:
        """Update in place (merge patch: results and summary replaced, uid kept), else create."""
        name = body["metadata"]["name"]
        api = self.api
        try:
            try:
                if namespace:
                    self._custom.patch_namespaced_custom_object(
                        api.group,
                        api.version,
                        namespace,
                        api.plural,
                        name,
                        body,
                        _request_timeout=_TIMEOUT,
                    )
                else:
                    self._custom.patch_cluster_custom_object(
                        api.group,
                        api.version,
                        api.cluster_plural,
                        name,
                        body,
                        _request_timeout=_TIMEOUT,
                    )
                return
            except ApiException as error:
                if error.status != 404:
                    raise
            if namespace:
                self._custom.create_namespaced_custom_object(
                    api.group, api.version, namespace, api.plural, body, _request_timeout=_TIMEOUT
                )
            else:
                self._custom.create_cluster_custom_object(
                    api.group, api.version, api.cluster_plural, body, _request_timeout=_TIMEOUT
                )
        except ApiException as error:
            raise self._fail("write", self._what(namespace, name), error) from error

    def existing(self, namespace: str | None, *, cluster: bool) -> set[tuple[str, str]]:
        """(namespace, name) of the reports fluxwarden manages, in `namespace` or everywhere."""
        api = self.api
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        found: set[tuple[str, str]] = set()
        calls: list[tuple[str, dict[str, Any]]] = []
        if namespace is not None:
            calls.append(("namespaced", {"namespace": namespace}))
        else:
            calls.append(("all", {}))
            if cluster:
                calls.append(("cluster", {}))
        for scope, where in calls:
            token: str | None = None
            while True:
                options: dict[str, Any] = {
                    "label_selector": selector,
                    "limit": 10,  # reports run to a megabyte each: keep a page small
                    "_request_timeout": _TIMEOUT,
                }
                if token:
                    options["_continue"] = token
                page: Any
                try:
                    if scope == "namespaced":
                        page = self._custom.list_namespaced_custom_object(
                            api.group, api.version, where["namespace"], api.plural, **options
                        )
                    else:
                        plural = api.cluster_plural if scope == "cluster" else api.plural
                        page = self._custom.list_cluster_custom_object(
                            api.group, api.version, plural, **options
                        )
                except ApiException as error:
                    if error.status == 404 and scope == "cluster":
                        break  # no cluster-scoped report kind installed: nothing of ours there
                    kind = self.api.cluster_kind if scope == "cluster" else self.api.kind
                    raise self._fail("list", f"{kind}s", error) from error
                for item in page.get("items") or []:
                    meta = item.get("metadata") or {}
                    found.add((meta.get("namespace") or "", meta.get("name") or ""))
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        return found

    def delete(self, namespace: str, name: str) -> None:
        api = self.api
        try:
            if namespace:
                self._custom.delete_namespaced_custom_object(
                    api.group, api.version, namespace, api.plural, name, _request_timeout=_TIMEOUT
                )
            else:
                self._custom.delete_cluster_custom_object(
                    api.group, api.version, api.cluster_plural, name, _request_timeout=_TIMEOUT
                )
        except ApiException as error:
            if error.status != 404:  # already gone is what we wanted
                raise self._fail("delete", self._what(namespace, name), error) from error


def write_reports(
    api_client: client.ApiClient,
    report: AuditReport,
    *,
    report_format: ReportFormat,
    namespace: str | None,
) -> None:
    """Store the audit's results as reports, replacing the previous run's.

    With `namespace`, only that namespace's reports are touched; otherwise every namespace's,
    and reports of namespaces (and the cluster scope) without results any more are deleted.
    Raises ReportWriteError.
    """
    api = REPORT_APIS[report_format]
    store = _Store(api_client, api)
    written: set[tuple[str, str]] = set()
    for ns, reports in build_reports(report, api=api, namespace=namespace):
        for body in reports:
            store.put(ns, body)
            written.add((ns, body["metadata"]["name"]))
    for ns, name in sorted(store.existing(namespace, cluster=namespace is None) - written):
        store.delete(ns, name)
