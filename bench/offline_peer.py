"""`python -m bench.offline_audit --peer kyverno`: fluxwarden's offline audit and fix side by
side with `kubectl-kyverno apply` (Kyverno v1.19.1's CLI) on the same input, in the same run.

The input: 10,000 HelmReleases (a quarter without drift detection, dependsOn chains as in
`bench.offline_audit`) and the four Flux controller Deployments as gotk-components.yaml ships
them (image-reflector-controller with 2 replicas and a 1Gi limit, kustomize-controller and
helm-controller without `--requeue-dependency`, source-controller with emptyDir /data and /tmp),
as a directory (a file per object) and as one multi-document file. The directory is flat:
`kubectl-kyverno apply --resource DIR` reads only DIR's own files (`os.ReadDir`,
cmd/cli/kubectl-kyverno/utils/common/common.go), where fluxwarden would also find them in a
directory per namespace.
fluxwarden runs its shipped policy set, Kyverno the ClusterPolicies of
`bench/kyverno/flux-best-practices.yaml` (the same policies without lookups).

Before anything is timed, the equivalence check: `fluxwarden fix --write` on a copy of the
directory and `kubectl-kyverno apply ... -o OUT` must give identical objects (each object as
fluxwarden's file holds it, as Kyverno wrote it to OUT or, when Kyverno did not change it, as
in the input), and both must change the same objects — at least one. Then interleaved rounds
(the order alternates), each command a fresh process: wall time, CPU time (the process and its
workers), peak RSS (`wait4`) and peak PSS (sampled every 0.1 s over the process tree).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import kyverno as kyverno_peer
from bench.offline_audit import FLUX_CONTROLLERS, _depends_on, namespace_of
from bench.report import markdown_table
from bench.scenarios import flux_controller
from webhook.cli import SHIPPED_POLICIES

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
DEFAULT_RELEASES = 10_000
SAMPLE_EVERY = 0.1  # seconds between PSS samples
FLUXWARDEN = Path(sys.executable).with_name("fluxwarden")


# --------------------------------------------------------------------------- the input


def controllers() -> Iterator[Obj]:
    """The Flux controllers as gotk-components.yaml ships them (what the policies change)."""
    volumes: dict[str, list[tuple[str, str, Obj]]] = {
        "source-controller": [
            ("data", "/data", {"emptyDir": {}}),
            ("tmp", "/tmp", {"emptyDir": {}}),
        ]
    }
    for name in FLUX_CONTROLLERS:
        replicas = 2 if name == "image-reflector-controller" else 1
        yield flux_controller(name, replicas=replicas, volumes=volumes.get(name))


def helm_releases(count: int) -> Iterator[Obj]:
    for index in range(count):
        spec: Obj = {
            "interval": "10m",
            "chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}},
            "values": {"replicaCount": 2, "ingress": {"enabled": True}},
        }  # fmt: skip
        if index % 4:
            spec["driftDetection"] = {"mode": "enabled"}
        if dependencies := _depends_on("hr", index):
            spec["dependsOn"] = dependencies
        yield {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": f"hr-{index}", "namespace": namespace_of(index)},
            "spec": spec,
        }


def manifests(releases: int) -> list[Obj]:
    return [*controllers(), *helm_releases(releases)]


def write_directory(root: Path, objects: Iterable[Obj]) -> None:
    """A file per object, all in `root` (see the module's docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        meta = obj["metadata"]
        path = root / f"{meta['namespace']}-{obj['kind'].lower()}-{meta['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))


def write_file(path: Path, objects: Iterable[Obj]) -> None:
    path.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))


# --------------------------------------------------------------------------- equivalence


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta.get("name") or "")


def objects_in(path: Path) -> dict[Key, Obj]:
    """Every object in the YAML files under `path` (or in that file); a later document of the
    same object wins (Kyverno appends one per policy that changed it, the last has them all)."""
    files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
    found: dict[Key, Obj] = {}
    for file in files:
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind"):
                found[key_of(doc)] = doc
    return found


@dataclass
class Equivalence:
    changed_by_fluxwarden: set[Key]
    changed_by_kyverno: set[Key]
    different: list[Key] = field(default_factory=list)  # objects whose results differ

    @property
    def identical(self) -> bool:
        return (
            not self.different
            and bool(self.changed_by_fluxwarden)
            and self.changed_by_fluxwarden == self.changed_by_kyverno
        )


def compare_results(
    original: dict[Key, Obj], fluxwarden: dict[Key, Obj], kyverno_output: dict[Key, Obj]
) -> Equivalence:
    """fluxwarden's fixed files against Kyverno's output (where it wrote nothing: the input)."""
    kyverno = {**original, **kyverno_output}
    keys = sorted(set(original) | set(fluxwarden) | set(kyverno))
    return Equivalence(
        changed_by_fluxwarden={k for k in keys if fluxwarden.get(k) != original.get(k)},
        changed_by_kyverno={k for k in keys if kyverno.get(k) != original.get(k)},
        different=[k for k in keys if fluxwarden.get(k) != kyverno.get(k)],
    )


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    wall: float
    cpu: float  # user + system of the process and the children it waited for
    peak_rss_mib: float
    peak_pss_mib: float
    returncode: int


def _tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pids[index]}/task").iterdir():
                pids += map(int, (task / "children").read_text().split())
        index += 1
    return pids


def _tree_pss_mib(pid: int) -> float:
    total = 0.0
    for member in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
    return total


def run_measured(argv: list[str], *, output: Path, cwd: Path | None = None) -> Run:
    """`argv` with its stdout and stderr to `output`; its wall time, CPU and peaks."""
    peak = [0.0]
    done = threading.Event()
    with output.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)

        def sample() -> None:
            while not done.wait(SAMPLE_EVERY):
                peak[0] = max(peak[0], _tree_pss_mib(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
        peak_pss_mib=peak[0],
        returncode=process.returncode,
    )


@dataclass(frozen=True)
class Task:
    """One row of the comparison: how each tool does the same job."""

    name: str
    fluxwarden: list[str]
    kyverno: list[str]
    fresh_copy: bool = False  # fluxwarden rewrites files: each run gets a new copy


def expressed_policies(work: Path) -> Path:
    """The shipped PolicySet cut to the policies Kyverno's ClusterPolicies express (the same
    names in bench/kyverno/): the policies added since (remediation, release identity, intervals,
    API versions, source trust) have no Kyverno counterpart here, so both tools run the same set."""
    names = {
        str(doc["metadata"]["name"])
        for path in (kyverno_peer.POLICIES, kyverno_peer.LOOKUP_POLICIES)
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    }
    shipped = yaml.safe_load(SHIPPED_POLICIES.read_text(encoding="utf-8"))
    shipped["spec"]["policies"] = [p for p in shipped["spec"]["policies"] if p["name"] in names]
    target = work / "fluxwarden-policies.yaml"
    target.write_text(yaml.safe_dump(shipped, sort_keys=False), encoding="utf-8")
    return target


def tasks(work: Path) -> list[Task]:
    cli = str(kyverno_peer.build_dir() / "kubectl-kyverno")
    policies = str(kyverno_peer.POLICIES)
    expressed = ["--policies", str(work / "fluxwarden-policies.yaml")]
    fluxwarden = [str(FLUXWARDEN)]
    return [
        Task(
            "audit a directory",
            [*fluxwarden, "audit", *expressed, "--no-render", str(work / "tree")],
            [cli, "apply", policies, "--resource", str(work / "tree"), "--remove-color"],
        ),
        Task(
            "audit one multi-document file",
            [*fluxwarden, "audit", *expressed, "--no-render", str(work / "all.yaml")],
            [cli, "apply", policies, "--resource", str(work / "all.yaml"), "--remove-color"],
        ),
        Task(
            "write the fixed manifests (`fix --write` vs `apply -o DIR`)",
            [*fluxwarden, "fix", "--write", *expressed, "--no-render", str(work / "copy")],
            [cli, "apply", policies, "--resource", str(work / "tree"), "-o", str(work / "out"),
             "--remove-color"],
            fresh_copy=True,
        ),
    ]  # fmt: skip


def _prepare(task: Task, work: Path) -> None:
    """A fresh copy for fluxwarden to rewrite, an empty output dir for Kyverno to fill (not
    timed)."""
    if task.fresh_copy:
        shutil.rmtree(work / "copy", ignore_errors=True)
        shutil.copytree(work / "tree", work / "copy")
        shutil.rmtree(work / "out", ignore_errors=True)


def _checked(tool: str, task: Task, run: Run, output: Path) -> Run:
    # audit exits 1 on findings, Kyverno's apply on failed validations: both are results.
    if run.returncode not in (0, 1):
        tail = output.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{tool} ({task.name}) exited {run.returncode}:\n{tail}")
    return run


def check_equivalence(work: Path) -> Equivalence:
    """The fix task once per tool, untimed, and their results compared."""
    fix = tasks(work)[-1]
    _prepare(fix, work)
    _checked(
        "fluxwarden", fix, run_measured(fix.fluxwarden, output=work / "fw.out"), work / "fw.out"
    )
    _checked("kyverno", fix, run_measured(fix.kyverno, output=work / "ky.out"), work / "ky.out")
    return compare_results(
        objects_in(work / "tree"), objects_in(work / "copy"), objects_in(work / "out")
    )


def interleaved(work: Path, rounds: int) -> dict[str, dict[str, list[Run]]]:
    runs: dict[str, dict[str, list[Run]]] = {}
    for round_index in range(rounds):
        for task in tasks(work):
            order = [("fluxwarden", task.fluxwarden), ("kyverno", task.kyverno)]
            for tool, argv in order if round_index % 2 == 0 else order[::-1]:
                _prepare(task, work)
                output = work / f"{tool}.out"
                run = _checked(tool, task, run_measured(argv, output=output), output)
                runs.setdefault(task.name, {}).setdefault(tool, []).append(run)
        print(f"round {round_index + 1}/{rounds} done ({load_average()})", file=sys.stderr)
    return runs


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


# --------------------------------------------------------------------------- report


def table(runs: dict[str, dict[str, list[Run]]]) -> str:
    header = ["job", "fluxwarden s", "peak PSS / RSS MiB", "CPU s"]
    header += ["kubectl-kyverno s", "peak PSS / RSS MiB", "CPU s", "ratio (wall)", "ratio (CPU)"]
    rows = []
    for name, by_tool in runs.items():
        cells = [name]
        medians = {}
        for tool in ("fluxwarden", "kyverno"):
            measured = by_tool[tool]
            wall = statistics.median(r.wall for r in measured)
            cpu = statistics.median(r.cpu for r in measured)
            medians[tool] = (wall, cpu)
            cells += [
                f"{wall:.2f} ({', '.join(f'{r.wall:.2f}' for r in measured)})",
                f"{statistics.median(r.peak_pss_mib for r in measured):.0f} / "
                f"{statistics.median(r.peak_rss_mib for r in measured):.0f}",
                f"{cpu:.2f}",
            ]
        (fw_wall, fw_cpu), (ky_wall, ky_cpu) = medians["fluxwarden"], medians["kyverno"]
        cells += [f"{fw_wall / ky_wall:.2f}x", f"{fw_cpu / ky_cpu:.2f}x"]
        rows.append(cells)
    return markdown_table(header, rows, text_columns=1)


def main(*, releases: int, rounds: int) -> int:
    if kyverno_peer.missing():
        raise SystemExit(
            f"missing Kyverno {kyverno_peer.missing()}: run tests/controlplane/kyverno/build.sh"
        )
    with tempfile.TemporaryDirectory(prefix="fluxwarden-peer-") as tmp:
        work = Path(tmp)
        objects = manifests(releases)
        write_directory(work / "tree", objects)
        write_file(work / "all.yaml", objects)
        expressed_policies(work)
        equivalence = check_equivalence(work)
        if not equivalence.identical:
            print(
                f"NOT equivalent: {len(equivalence.different)} objects differ "
                f"(first: {equivalence.different[:3]}); changed by fluxwarden "
                f"{len(equivalence.changed_by_fluxwarden)}, by Kyverno "
                f"{len(equivalence.changed_by_kyverno)}"
            )
            return 1
        started_load = load_average()
        runs = interleaved(work, rounds)
        ended_load = load_average()
    print(
        f"\n## fluxwarden vs kubectl-kyverno {kyverno_peer.VERSION}: {releases:,} HelmReleases + "
        f"{len(FLUX_CONTROLLERS)} Flux controllers\n\n"
        f"Equivalent before timing: the same {len(equivalence.changed_by_fluxwarden)} objects "
        f"changed, identical results on all {len(objects)}. {rounds} interleaved rounds; "
        f"{started_load} at the start, {ended_load} at the end ({os.cpu_count()} CPUs).\n"
    )
    print(table(runs))
    print("\nratio: fluxwarden / kubectl-kyverno, medians (below 1: fluxwarden is faster)")
    return 0
