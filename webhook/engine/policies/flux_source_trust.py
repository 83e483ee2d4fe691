"""Trusted Flux sources: no `insecure: true` (plain HTTP), URLs from an allowlist where one is
configured, and pinned versions in production namespaces."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import (
    BUCKETS,
    GITREPOSITORIES,
    HELMRELEASES,
    HELMREPOSITORIES,
    OCIREPOSITORIES,
    ResourceKind,
)
from .base import Native, NativeFinding, Params, Policy, Report, dig

SourceKind = Literal["GitRepository", "OCIRepository", "HelmRepository", "Bucket"]
SOURCES: tuple[ResourceKind, ...] = (GITREPOSITORIES, OCIREPOSITORIES, HELMREPOSITORIES, BUCKETS)
# Where each kind keeps the address it fetches from.
URL_FIELD: dict[str, str] = {
    "GitRepository": "url",
    "OCIRepository": "url",
    "HelmRepository": "url",
    "Bucket": "endpoint",
}
INSECURE_MESSAGE = (
    "spec.insecure is true: source-controller fetches this source over plain HTTP, "
    "where anyone on the path can change what the cluster applies"
)
HTTP_URL_MESSAGE = (
    "spec.url is plain http://: source-controller fetches this source without TLS, "
    "where anyone on the path can change what the cluster applies"
)
# GitRepository has no spec.insecure: its plain-HTTP form is an http:// URL (so is a
# HelmRepository's of type default).
HTTP_URL_KINDS = ("GitRepository", "HelmRepository")
LATEST_TAG_MESSAGE = (
    "spec.ref follows the latest tag in a production namespace: pin a semver range or a digest"
)
UNPINNED_CHART_MESSAGE = (
    "spec.chart.spec.version is unset or '*' in a production namespace: pin a semver range"
)
INSECURE = "has(object.spec) && has(object.spec.insecure) && object.spec.insecure == true"
HTTP_URL = (
    "has(object.spec) && has(object.spec.url) && object.spec.url.lowerAscii().startsWith('http://')"
)
# OCIRepository: no ref means the latest tag; a digest or semver takes precedence over a tag.
LATEST_TAG = (
    "has(object.spec) && (!has(object.spec.ref) || (!has(object.spec.ref.digest) && "
    "!has(object.spec.ref.semver) && (!has(object.spec.ref.tag) || "
    "object.spec.ref.tag == 'latest')))"
)
UNVERIFIED_MESSAGE = (
    "spec.verify is not set on an OCIRepository from {url}: its artifacts are signed, and "
    "without verification source-controller accepts unsigned or tampered ones"
)
UNVERIFIED = "has(object.spec) && has(object.spec.url) && !has(object.spec.verify)"
UNPINNED_CHART = (
    "has(object.spec) && has(object.spec.chart) && has(object.spec.chart.spec) && "
    "(!has(object.spec.chart.spec.version) || object.spec.chart.spec.version == '*')"
)


class SourceTrustParams(Params):
    insecure: bool = Field(
        default=True,
        description="Deny plain HTTP: spec.insecure true, or an http:// GitRepository or "
        "HelmRepository URL.",
    )
    allowed_urls: dict[SourceKind, list[str]] = Field(
        default_factory=dict,
        alias="allowedUrls",
        description="Per kind, the URL prefixes sources may fetch from (end them with '/'); "
        "a kind not listed is not restricted. Bucket: spec.endpoint.",
    )
    production_namespaces: list[str] = Field(
        default_factory=list,
        alias="productionNamespaces",
        description="Namespaces where OCIRepositories following the latest tag and HelmReleases "
        "without a pinned chart version are warned about ('*': every namespace).",
    )
    verified_urls: list[str] = Field(
        default_factory=list,
        alias="verifiedUrls",
        description="OCIRepository URL prefixes whose artifacts are signed: an OCIRepository "
        "under one without spec.verify is a violation ('oci://': every OCIRepository).",
    )

    def in_production(self, namespace: str) -> bool:
        return "*" in self.production_namespaces or namespace in self.production_namespaces

    def production_scope(self) -> frozenset[str]:
        """The namespaces a Match names (empty: any) for the production checks."""
        return (
            frozenset()
            if "*" in self.production_namespaces
            else frozenset(self.production_namespaces)
        )


def _url_message(kind: str, field: str, url: str, prefixes: list[str]) -> str:
    return f"spec.{field} {url} is not under an allowed {kind} URL ({', '.join(prefixes)})"


class FluxSourceTrust(Policy[SourceTrustParams]):
    name: ClassVar[str] = "flux-source-trust"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "a source fetched over plain HTTP or from anywhere lets others change what the cluster "
        "applies: deny insecure sources and URLs outside an allowlist, warn on unpinned "
        "production versions"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "security-audit.md",
        "https://fluxcd.io/flux/security/best-practices/",
    )
    params_model = SourceTrustParams

    def _restricted(self, params: SourceTrustParams) -> str:
        """CEL: the request's kind has an allowlist (every object of it must be seen)."""
        kinds = ", ".join(cel_string(k) for k in sorted(params.allowed_urls))
        return f"request.kind.kind in [{kinds}]"

    def scope(self, params: SourceTrustParams) -> tuple[Match, ...]:
        conditions = [INSECURE, HTTP_URL] if params.insecure else []
        if params.allowed_urls:
            conditions.append(self._restricted(params))
        if params.verified_urls:
            conditions.append(f"request.kind.kind == 'OCIRepository' && {UNVERIFIED}")
        matches = []
        if conditions:
            condition = " || ".join(f"({c})" for c in conditions)
            matches.append(
                Match(resources=tuple(ResourceMatch(k) for k in SOURCES), condition=condition)
            )
        if params.production_namespaces:
            production = params.production_scope()
            matches += [
                Match(
                    (ResourceMatch(OCIREPOSITORIES),), namespaces=production, condition=LATEST_TAG
                ),
                Match(
                    (ResourceMatch(HELMRELEASES),), namespaces=production, condition=UNPINNED_CHART
                ),
            ]
        return tuple(matches)

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: SourceTrustParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        kind = request.target.kind
        if kind in URL_FIELD:
            if params.insecure and dig(obj, "spec", "insecure") is True:
                report.violation(INSECURE_MESSAGE)
            url = dig(obj, "spec", "url")
            plain = isinstance(url, str) and url.lower().startswith("http://")
            if params.insecure and kind in HTTP_URL_KINDS and plain:
                report.violation(HTTP_URL_MESSAGE)
            self._check_url(obj, kind, params, report)
            if kind == "OCIRepository":
                _check_verified(obj, params.verified_urls, report)
        if not params.in_production(request.target.namespace):
            return
        if kind == "OCIRepository" and _follows_latest(dig(obj, "spec")):
            report.advise(LATEST_TAG_MESSAGE)
        chart = dig(obj, "spec", "chart", "spec")
        if (
            kind == "HelmRelease"
            and isinstance(chart, dict)
            and chart.get("version") in (None, "*")
        ):
            report.advise(UNPINNED_CHART_MESSAGE)

    def _check_url(
        self, obj: JsonObject, kind: str, params: SourceTrustParams, report: Report
    ) -> None:
        prefixes = params.allowed_urls.get(kind)  # type: ignore[call-overload]
        field = URL_FIELD[kind]
        url = dig(obj, "spec", field)
        if not prefixes or not isinstance(url, str) or "${" in url:
            return  # ${VAR}: Flux substitutes it later, judged then
        if not any(url.startswith(prefix) for prefix in prefixes):
            report.violation(_url_message(kind, field, url, prefixes))

    def native(self, params: SourceTrustParams) -> Native:
        findings = []
        if params.insecure:
            http_kinds = ", ".join(cel_string(k) for k in HTTP_URL_KINDS)
            findings += [
                NativeFinding("violation", INSECURE, cel_string(INSECURE_MESSAGE)),
                NativeFinding(
                    "violation",
                    f"request.kind.kind in [{http_kinds}] && {HTTP_URL}",
                    cel_string(HTTP_URL_MESSAGE),
                ),
            ]
        for kind, prefixes in sorted(params.allowed_urls.items()):
            if not prefixes:
                continue
            field = URL_FIELD[kind]
            url = f"object.spec.{field}"
            listed = ", ".join(cel_string(p) for p in prefixes)
            findings.append(
                NativeFinding(
                    "violation",
                    f"request.kind.kind == {cel_string(kind)} && has(object.spec) && "
                    f"has({url}) && !{url}.contains('${{') && "
                    f"![{listed}].exists(p, {url}.startsWith(p))",
                    f"{cel_string(f'spec.{field} ')} + {url} + "
                    + cel_string(f" is not under an allowed {kind} URL ({', '.join(prefixes)})"),
                )
            )
        if params.verified_urls:
            listed = ", ".join(cel_string(p) for p in params.verified_urls)
            url = "object.spec.url"
            findings.append(
                NativeFinding(
                    "violation",
                    f"request.kind.kind == 'OCIRepository' && {UNVERIFIED} && "
                    f"!{url}.contains('${{') && [{listed}].exists(p, {url}.startsWith(p))",
                    " + ".join(
                        (
                            cel_string(UNVERIFIED_MESSAGE.split("{url}")[0]),
                            url,
                            cel_string(UNVERIFIED_MESSAGE.split("{url}")[1]),
                        )
                    ),
                )
            )
        if params.production_namespaces:
            production = ", ".join(cel_string(n) for n in sorted(params.production_namespaces))
            where = (
                "true"
                if "*" in params.production_namespaces
                else f"request.namespace in [{production}]"
            )
            findings += [
                NativeFinding(
                    "advisory",
                    f"{where} && request.kind.kind == 'OCIRepository' && {LATEST_TAG}",
                    cel_string(LATEST_TAG_MESSAGE),
                ),
                NativeFinding(
                    "advisory",
                    f"{where} && request.kind.kind == 'HelmRelease' && {UNPINNED_CHART}",
                    cel_string(UNPINNED_CHART_MESSAGE),
                ),
            ]
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            findings=tuple(findings),
        )


def _follows_latest(spec: Any) -> bool:
    """An OCIRepository spec that resolves to the `latest` tag (no ref at all defaults to it)."""
    if not isinstance(spec, dict):
        return False
    ref = spec.get("ref")
    if not isinstance(ref, dict):
        return ref is None
    if ref.get("digest") or ref.get("semver"):
        return False
    return ref.get("tag") in (None, "latest")


def _check_verified(obj: JsonObject, prefixes: list[str], report: Report) -> None:
    """A violation when the OCIRepository's URL is under a signed prefix and it verifies
    nothing (a `${VAR}` URL is judged once Flux substituted it)."""
    url = dig(obj, "spec", "url")
    if not prefixes or not isinstance(url, str) or "${" in url:
        return
    if dig(obj, "spec", "verify") is None and any(url.startswith(p) for p in prefixes):
        report.violation(UNVERIFIED_MESSAGE.format(url=url))
