"""The `fluxwarden` command line: serve, review, audit, fix, certs, policies.

Usage and input errors exit 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .engine import OWN_NAMESPACE, Mode, PolicySet, PolicySetError, parse_mode

if TYPE_CHECKING:
    from .audit.findings import AuditReport
    from .certs import CertificateAuthority


def _shipped_policies() -> Path:
    """The default policy set: inside the installed package (`webhook.policies`, mapped from the
    repo's `policies/` by setup.py), else in the source tree next to `webhook/`."""
    from importlib.util import find_spec

    spec = find_spec("webhook.policies") if find_spec("webhook") else None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "flux-best-practices.yaml"
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parent.parent / "policies" / "flux-best-practices.yaml"


SHIPPED_POLICIES = _shipped_policies()
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or bad input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"fluxwarden: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def default_policies() -> Path:
    return Path(os.environ.get("FLUXWARDEN_POLICIES") or SHIPPED_POLICIES)


def mode_override(args: argparse.Namespace) -> Mode | None:
    """--mode, else FLUXWARDEN_MODE, else the policy set's own spec.mode."""
    value = args.mode or os.environ.get("FLUXWARDEN_MODE") or None
    try:
        return parse_mode(value) if value else None
    except PolicySetError as error:
        raise UsageError(str(error)) from error


def load_policies(args: argparse.Namespace) -> PolicySet:
    """The policy set of --policies, with the --mode / FLUXWARDEN_MODE ceiling applied."""
    from .server.policystore import load_policy_file

    try:
        return load_policy_file(Path(args.policies)).with_ceiling(mode_override(args))
    except PolicySetError as error:
        raise UsageError(str(error)) from error


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        default=str(default_policies()),
        metavar="PATH",
        help="PolicySet YAML (default: $FLUXWARDEN_POLICIES or the shipped flux-best-practices set)",
    )
    parser.add_argument(
        "--mode",
        choices=["enforce", "warn", "audit", "off"],
        help="override spec.mode for every policy (also $FLUXWARDEN_MODE): the dry-run switch",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    # The workers are gevent's: patch before anything imports ssl or urllib3 (the kubeconfig
    # check below does), or the lookups' TLS breaks (RecursionError) in every worker.
    from gevent import monkey

    monkey.patch_all()
    from .server.run import ServeOptions, serve

    if bool(args.cert_file) != bool(args.key_file):
        raise UsageError("--cert-file and --key-file go together")
    override = mode_override(args)
    load_policies(args)
    if args.client_ca_file and not args.cert_file:
        raise UsageError("--client-ca-file needs --cert-file and --key-file (mTLS is over TLS)")
    if not 0 < args.deadline <= 30:
        raise UsageError("--deadline must be between 0 and 30 seconds")
    for path in (args.cert_file, args.key_file, args.client_ca_file):
        if path and not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    if args.lookups == "kube":
        _api_client(args)  # fail here, with one line, not in every worker
    serve(
        ServeOptions(
            policies=Path(args.policies),
            cert_file=Path(args.cert_file) if args.cert_file else None,
            key_file=Path(args.key_file) if args.key_file else None,
            host=args.host,
            port=args.port,
            workers=args.workers,
            connections=args.connections,
            ceiling=override,
            kubeconfig=args.kubeconfig,
            context=args.context,
            lookups=args.lookups,
            log_level=args.log_level,
            client_ca_file=Path(args.client_ca_file) if args.client_ca_file else None,
            deadline=args.deadline,
        )
    )
    return 0


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror}") from error


def _api_client(args: argparse.Namespace, *, retries: int | None = None) -> Any:
    """The Kubernetes ApiClient for --kubeconfig/--context (default: in-cluster, then
    ~/.kube/config); a missing or broken config is a usage error. (Typed Any: only
    webhook.kube imports `kubernetes`.)"""
    from .kube.lookups import load_api_client

    try:
        return load_api_client(args.kubeconfig, args.context, retries=retries)
    except Exception as error:  # ConfigException, OSError, YAML errors, bad certificate data...
        source = f" from {args.kubeconfig}" if args.kubeconfig else ""
        raise UsageError(f"cannot load Kubernetes config{source}: {error}") from error


def cmd_review(args: argparse.Namespace) -> int:
    from .admission import BadRequest, parse_json, review
    from .engine import Lookups
    from .lookups.offline import OfflineLookups

    policy_set = load_policies(args)
    body = _read_input(args.file)
    try:
        payload = parse_json(body)
        lookups: Lookups
        if args.kubeconfig:
            from .kube.lookups import KubeLookups

            lookups = KubeLookups(_api_client(args, retries=0))
        else:
            request = payload.get("request") if isinstance(payload, dict) else None
            obj = request.get("object") if isinstance(request, dict) else None
            lookups = OfflineLookups([obj] if isinstance(obj, dict) else [])
        response, _, _ = review(
            payload,
            policy_set=policy_set,
            lookups=lookups,
            webhook=args.webhook,
        )
    except BadRequest as error:
        raise UsageError(f"{args.file}: {error}") from error
    json.dump(response, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _existing_ca(out: Path) -> CertificateAuthority | None:
    """The CA an earlier run left in `out` (ca.crt + ca.key), or None if there is none."""
    from .certs import CertificateAuthority, CertificateError

    cert_file, key_file = out / "ca.crt", out / "ca.key"
    present = [p.name for p in (cert_file, key_file) if p.exists()]
    if not present:
        return None
    if len(present) == 1:
        missing = "ca.key" if present == ["ca.crt"] else "ca.crt"
        raise UsageError(
            f"{out} has {present[0]} but no {missing}: restore it, or pass --new-ca for a new CA "
            "(this changes the caBundle)"
        )
    try:
        return CertificateAuthority.from_pem(cert_file.read_bytes(), key_file.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read {error.filename}: {error.strerror}") from error
    except CertificateError as error:
        raise UsageError(
            f"cannot reuse the CA in {out}: {error} (pass --new-ca for a new CA, which changes "
            "the caBundle)"
        ) from error


def cmd_certs(args: argparse.Namespace) -> int:
    from .certs import CertificateError, check_request, issue

    try:
        check_request(dns_names=args.dns, ip_addresses=args.ip, days=args.days)
    except ValueError as error:
        raise UsageError(str(error)) from error
    out = Path(args.out)
    ca = None if args.new_ca else _existing_ca(out)
    try:
        issued = issue(dns_names=args.dns, ip_addresses=args.ip, days=args.days, ca=ca)
    except CertificateError as error:  # the existing CA expires too soon
        raise UsageError(
            f"cannot reuse the CA in {out}: {error} (pass --new-ca for a new CA, which changes "
            "the caBundle)"
        ) from error
    except ValueError as error:
        raise UsageError(str(error)) from error
    try:
        written = issued.write(out)
    except OSError as error:
        raise UsageError(f"cannot write to {args.out}: {error.strerror}") from error
    if not issued.new_ca:
        print(f"reusing the CA in {out} (the caBundle is unchanged)", file=sys.stderr)
    for name, path in written.items():
        print(f"{name}: {path}", file=sys.stderr)
    print(issued.ca_bundle)
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    policy_set = load_policies(args)
    if args.output == "json":
        rows = [
            {
                "name": p.policy.name,
                "mode": policy_set.effective_mode(p),
                "configuredMode": p.mode,
                "webhook": p.policy.webhook,
                "why": p.policy.summary,
                "sources": list(p.policy.sources),
                "params": p.params.model_dump(by_alias=True, mode="json"),
            }
            for p in policy_set.policies
        ]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"policy set {policy_set.name} from {policy_set.source} (ceiling: {policy_set.mode})")
    width = max(len(p.policy.name) for p in policy_set.policies) if policy_set.policies else 0
    for p in policy_set.policies:
        mode = policy_set.effective_mode(p)
        print(f"  {p.policy.name:<{width}}  {mode:<7}  {p.policy.summary}")
        for source in p.policy.sources:
            print(f"  {'':<{width}}  {'':<7}  source: {source}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit.formats import render

    policy_set = load_policies(args)
    if args.cluster:
        if args.paths:
            raise UsageError("give PATHs or --cluster, not both")
        if args.source:
            raise UsageError("--source maps a Flux source for PATHs, not for --cluster")
        report = _cluster_audit(args, policy_set)
    else:
        if not args.paths:
            raise UsageError("give PATH... (files, directories, or - for stdin) or --cluster")
        if args.report:
            raise UsageError("--report needs --cluster")
        from .audit.offline import audit_paths

        report = audit_paths(
            args.paths,
            policy_set=policy_set,
            exclude=args.exclude,
            render=not args.no_render,
            kustomize=args.kustomize,
            jobs=args.jobs,
            allow_remote=args.allow_remote_bases,
            audit_unreached=args.audit_unreached,
            mapped=_mapped_sources(args),
        )
    color = args.format == "table" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    shown = getattr(args, "show_unreached", False)
    text = render(report, args.format, color=color, verbose=args.verbose, show_unreached=shown)
    sys.stdout.write(text)
    return report.exit_code(args.fail_on)


def _cluster_audit(args: argparse.Namespace, policy_set: PolicySet) -> AuditReport:
    from .audit.cluster import ReportWriteError, audit_cluster, write_reports

    if args.namespace and args.all_namespaces:
        raise UsageError("-n/--namespace and -A/--all-namespaces go separately")
    api_client = _api_client(args)
    namespace = None if args.all_namespaces or not args.namespace else args.namespace
    report = audit_cluster(
        api_client,
        policy_set=policy_set,
        namespace=namespace,
        progress=sys.stderr.isatty(),
    )
    if args.report:
        try:
            write_reports(api_client, report, report_format=args.report_format, namespace=namespace)
        except ReportWriteError as error:
            raise UsageError(f"cannot write reports: {error}") from error
    return report


def cmd_fix(args: argparse.Namespace) -> int:
    from .audit.fix import fix_paths
    from .audit.formats import printable, quoting_prefix

    policy_set = load_policies(args)
    if args.write and args.check:
        raise UsageError("--write and --check go separately")
    result = fix_paths(
        args.paths,
        policy_set=policy_set,
        write=args.write,
        exclude=args.exclude,
        render=not args.no_render,
        kustomize=args.kustomize,
        per_file=args.per_file,
        allow_remote=args.allow_remote_bases,
        audit_unreached=args.audit_unreached,
        jobs=args.jobs,
        mapped=_mapped_sources(args),
    )
    if not args.write:
        sys.stdout.write(result.diff)
    for note in result.notes:  # file names and messages from the input: one visible line each
        print(f"fluxwarden: {printable(quoting_prefix(note))}", file=sys.stderr)
    for path in result.changed_files if args.write else []:
        print(f"fixed {printable(path)}", file=sys.stderr)
    for path in result.changed_files if args.check else []:
        print(f"would fix {printable(path)}", file=sys.stderr)
    for problem in result.problems:
        where, message = printable(problem.source), printable(quoting_prefix(problem.message))
        print(f"fluxwarden: {where}:{problem.line}: {message}", file=sys.stderr)
    if any(p.error for p in result.problems):
        return 2
    return 1 if args.check and result.changed_files else 0


def _mapped_sources(args: argparse.Namespace) -> Any:
    """The `--source` mappings (a MappedInputs); a malformed one is a usage error."""
    from .audit.mapped_sources import MappedInputs, parse_mappings

    try:
        return MappedInputs(parse_mappings(args.source))
    except ValueError as error:
        raise UsageError(str(error)) from error


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files and directories matching GLOB (relative to PATH; repeatable)",
    )
    parser.add_argument(
        "--no-render",
        action="store_true",
        help="audit files as they are, not what Flux Kustomizations build from them",
    )
    parser.add_argument(
        "--kustomize",
        metavar="PATH",
        help="kustomize or kubectl binary (also $FLUXWARDEN_KUSTOMIZE; default: a "
        "kustomize-server if found, else kustomize, else kubectl on PATH)",
    )
    parser.add_argument(
        "--kustomize-server",
        metavar="PATH",
        help="kustomize-server binary (tools/kustomize-server; also "
        "$FLUXWARDEN_KUSTOMIZE_SERVER, 'off' for none): kustomize's library in a few "
        "processes for the run, the same builds without a process each; preferred over "
        "--kustomize; default: fluxwarden-kustomize-server on PATH, else this checkout's build",
    )
    parser.add_argument(
        "--allow-remote-bases",
        action="store_true",
        help="let kustomize fetch remote resources, bases and components (default: a "
        "Kustomization that uses them is reported as not audited, nothing is fetched)",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="KIND/NAMESPACE/NAME=PATH",
        help="render the Flux Kustomizations whose sourceRef is this source (GitRepository, "
        "OCIRepository, Bucket, ExternalArtifact) from the local directory PATH, confined as "
        "the repo is (repeatable; nothing is fetched; fix never writes there unless PATH is "
        "below a PATH given)",
    )
    parser.add_argument(
        "--audit-unreached",
        action="store_true",
        help="also audit (and fix) files no cluster applies, as written; by default they are "
        "only counted",
    )


def _jobs_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        metavar="N",
        help=f"processes that {what} large inputs (default: $FLUXWARDEN_JOBS, else "
        "one per available CPU; 1: in this process)",
    )


def cmd_manifests(args: argparse.Namespace) -> int:
    from . import native
    from .manifests import Install, render

    policy_set = load_policies(args)
    install = Install(namespace=args.namespace, service=args.service)
    if args.overlay:
        if not args.hybrid:
            raise UsageError("--overlay needs --hybrid")
        for name, text in native.overlay_files(policy_set, install).items():
            (Path(args.overlay) / name).write_text(text)
        return 0
    if args.native or args.hybrid:
        sys.stdout.write(native.render(policy_set, install, hybrid=args.hybrid))
        return 0
    sys.stdout.write(render(policy_set, install))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from .alerts import render

    sys.stdout.write(render(load_policies(args), namespace=args.namespace))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fluxwarden", description=__doc__.splitlines()[0] if __doc__ else "")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the admission webhook server (HTTPS)")
    _common(serve)
    serve.add_argument("--cert-file", help="serving certificate (PEM); reloaded when it changes")
    serve.add_argument("--key-file", help="serving key (PEM)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gevent worker processes (each serves many connections)",
    )
    serve.add_argument(
        "--connections", type=int, default=1000, help="open connections per worker (the cap)"
    )
    serve.add_argument(
        "--client-ca-file",
        metavar="PATH",
        help="mTLS: admissions only from clients with a certificate from this CA (the API "
        "server's, see README); probes and /metrics stay open",
    )
    serve.add_argument(
        "--deadline",
        type=float,
        default=2.5,
        metavar="SECONDS",
        help="answer every admission within this time, lookups included; keep it below the "
        "webhook timeout (default 2.5)",
    )
    serve.add_argument(
        "--kubeconfig", help="for lookups (default: in-cluster, then ~/.kube/config)"
    )
    serve.add_argument("--context", help="kubeconfig context")
    serve.add_argument("--lookups", choices=["auto", "kube", "none"], default="auto")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=cmd_serve)

    review = commands.add_parser(
        "review", help="answer one AdmissionReview JSON (FILE or -) exactly as the server would"
    )
    _common(review)
    review.add_argument("file", metavar="FILE|-")
    review.add_argument(
        "--webhook",
        choices=["mutate", "validate", "all"],
        default="all",
        help="answer as the mutating or validating webhook (default: both together)",
    )
    review.add_argument("--kubeconfig", help="look up other objects in this cluster")
    review.add_argument("--context", help="kubeconfig context")
    review.set_defaults(func=cmd_review)

    certs = commands.add_parser(
        "certs",
        help="write a serving certificate and the CA that signs it (reusing the CA already in "
        "--out, so the caBundle stays the same); print the base64 caBundle",
    )
    _common(certs)
    certs.add_argument(
        "--out", required=True, help="directory for ca.crt, ca.key, tls.crt, tls.key"
    )
    certs.add_argument(
        "--new-ca",
        action="store_true",
        help="make a new CA even if --out holds one (changes the caBundle)",
    )
    certs.add_argument("--dns", action="append", default=[], help="DNS name (repeatable)")
    certs.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    certs.add_argument(
        "--days", type=int, default=365, help="serving certificate validity (default 365)"
    )
    certs.set_defaults(func=cmd_certs)

    audit = commands.add_parser(
        "audit", help="run the policies over manifests (PATH..., - for stdin) or a live cluster"
    )
    _common(audit)
    audit.add_argument("paths", nargs="*", metavar="PATH", help="files, directories (recursive), -")
    audit.add_argument(
        "-o", "--format", choices=["table", "json", "sarif", "junit"], default="table"
    )
    audit.add_argument(
        "--fail-on",
        choices=["fail", "warn", "none"],
        default="fail",
        help="exit 1 on findings at or above this level (default fail: anything enforce would "
        "change or deny)",
    )
    audit.add_argument("-v", "--verbose", action="store_true", help="also list passes and skips")
    audit.add_argument(
        "--show-unreached",
        action="store_true",
        help="list the files no cluster applies (not audited unless --audit-unreached) and "
        "those under a Flux Kustomization not audited by design (its source, a remote base)",
    )
    audit.add_argument("--cluster", action="store_true", help="audit the live cluster")
    _render_options(audit)
    _jobs_option(audit, "parse and evaluate")
    audit.add_argument(
        "--kubeconfig", help="with --cluster (default: in-cluster, then ~/.kube/config)"
    )
    audit.add_argument("--context", help="kubeconfig context")
    audit.add_argument("-n", "--namespace", help="with --cluster: only this namespace")
    audit.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with --cluster (default)"
    )
    audit.add_argument("--report", action="store_true", help="with --cluster: write PolicyReports")
    audit.add_argument(
        "--report-format",
        choices=["wgpolicyk8s", "openreports"],
        default="wgpolicyk8s",
        help="PolicyReport API to write (wgpolicyk8s.io/v1alpha2 or openreports.io/v1alpha1)",
    )
    audit.set_defaults(func=cmd_audit)

    fix = commands.add_parser(
        "fix", help="apply the enforced mutations to YAML files (diff; --write rewrites them)"
    )
    _common(fix)
    fix.add_argument("paths", nargs="+", metavar="PATH")
    fix.add_argument("--write", action="store_true", help="rewrite the files in place")
    _render_options(fix)
    _jobs_option(fix, "parse")
    fix.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a file would change (the CI gate, like `ruff format --check`)",
    )
    fix.add_argument(
        "--per-file",
        action="store_true",
        help="edit each HelmRelease's own file, not the Flux Kustomization defaults patch "
        "that covers them all",
    )
    fix.set_defaults(func=cmd_fix)

    policies = commands.add_parser("policies", help="list the policies, effective modes and why")
    _common(policies)
    policies.add_argument("-o", "--output", choices=["text", "json"], default="text")
    policies.set_defaults(func=cmd_policies)
    manifests = commands.add_parser(
        "manifests",
        help="print the webhook configurations and ClusterRoles generated from the policy set",
    )
    _common(manifests)
    manifests.add_argument(
        "--namespace",
        default=OWN_NAMESPACE,
        help=f"where fluxwarden runs (default {OWN_NAMESPACE})",
    )
    manifests.add_argument("--service", default="fluxwarden", help="fluxwarden's Service name")
    admission = manifests.add_mutually_exclusive_group()
    admission.add_argument(
        "--native",
        action="store_true",
        help="only Mutating/ValidatingAdmissionPolicies + bindings (Kubernetes 1.36+) for what "
        "CEL can express; what needs lookups is not enforced at admission",
    )
    admission.add_argument(
        "--hybrid",
        action="store_true",
        help="native policies, plus webhook configurations and RBAC for only what they do not cover",
    )
    manifests.add_argument(
        "--overlay",
        metavar="DIR",
        help="with --hybrid: write DIR/native.yaml (the native objects) and DIR/webhooks.yaml "
        "(a patch narrowing the base's webhooks), as manifests/overlays/native uses them",
    )
    manifests.set_defaults(func=cmd_manifests)
    alerts = commands.add_parser(
        "alerts",
        help="print the PrometheusRule (alerts for the failure modes) generated from the policy set",
    )
    _common(alerts)
    alerts.add_argument(
        "--namespace",
        default=OWN_NAMESPACE,
        help=f"where fluxwarden runs (default {OWN_NAMESPACE})",
    )
    alerts.set_defaults(func=cmd_alerts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from .audit.kustomize_runner import kustomize_servers

    try:
        with kustomize_servers(getattr(args, "kustomize_server", None)):
            return func(args)
    except UsageError as error:
        sys.stderr.write(f"fluxwarden: error: {' '.join(str(error).split())}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
