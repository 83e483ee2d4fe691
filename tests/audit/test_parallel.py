"""Large audits run in worker processes and give exactly what one process gives."""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.offline_audit import write_tree
from webhook.audit import documents, offline, workers
from webhook.audit.documents import load
from webhook.audit.formats import render
from webhook.audit.offline import audit_documents, audit_paths
from webhook.engine import PolicySet

# What a generated fleet does not have: every kind of document problem, YAML that marshal
# cannot carry (a timestamp), aliases, a List, and a dependsOn cycle across two files.
ODD_FILES: dict[str, str | bytes] = {
    "odd/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n",
    "odd/not-kubernetes.yaml": "just: a mapping\n---\n- a\n- list\n",
    "odd/empty.yaml": "# only a comment\n",
    "odd/latin1.yaml": b"kind: \xe9\n",
    "odd/stamp.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stamp, namespace: odd}\n"
        "data: {at: 2001-12-14t21:59:43.10-05:00}\n"
    ),
    "odd/aliases.yaml": (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- &base {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: odd}}\n"
        "- *base\n"
    ),
    "odd/cycle-a.yaml": (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        "metadata: {name: a, namespace: odd}\n"
        "spec: {interval: 10m, path: ./a, dependsOn: [{name: b}]}\n"
    ),
    "odd/cycle-b.yaml": (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        "metadata: {name: b, namespace: odd}\n"
        "spec: {interval: 10m, path: ./b, dependsOn: [{name: a}]}\n"
    ),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    write_tree(root, 600)
    for name, content in ODD_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture
def parallel_from_two(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Workers from two items on; returns the `jobs` of each fan-out, to show it happened."""
    monkeypatch.setattr(workers, "PARALLEL_MIN", 2)
    fanned: list[int] = []

    def spy(*args: Any, jobs: int, **kwargs: Any) -> Any:
        fanned.append(jobs)
        return workers.ordered_map(*args, jobs=jobs, **kwargs)

    monkeypatch.setattr(documents, "ordered_map", spy)
    monkeypatch.setattr(offline, "ordered_map", spy)
    return fanned


def test_small_inputs_and_one_job_stay_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.JOBS_VARIABLE, raising=False)
    assert workers.jobs_for(workers.PARALLEL_MIN - 1, 8) == 1
    assert workers.jobs_for(100_000, 1) == 1
    assert workers.jobs_for(workers.PARALLEL_MIN, 2) == 2
    cpus = workers.available_cpus()
    assert workers.jobs_for(100_000, None) == (cpus if cpus > 1 else 1)


def test_the_jobs_variable_sets_how_many_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.JOBS_VARIABLE, "1")
    assert workers.jobs_for(100_000, None) == 1
    monkeypatch.setenv(workers.JOBS_VARIABLE, "3")
    assert workers.jobs_for(100_000, None) == 3
    assert workers.jobs_for(100_000, 2) == 2  # given explicitly: the variable does not count


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_cpu_quota_bounds_the_cpus(
    tmp_path: Path, files: dict[str, str], quota: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert workers._cgroup_quota(str(tmp_path)) == quota


def test_slices_are_computed_in_other_processes_and_come_back_in_order() -> None:
    parent = os.getpid()
    results = list(
        workers.ordered_map(lambda part: [(n, os.getpid()) for n in part], range(40), jobs=2)
    )
    assert sum(count for count, _ in results) == 40
    flat = [pair for _, part in results for pair in part]
    assert [n for n, _ in flat] == list(range(40))
    assert parent not in {pid for _, pid in flat}
    assert len(results) == 2 * workers.SLICES_PER_JOB


def test_a_slice_whose_worker_dies_is_computed_in_process() -> None:
    parent = os.getpid()

    def dies_on_zero(part: Any) -> list[int]:
        if 0 in part and os.getpid() != parent:
            os._exit(1)  # as the kernel's OOM killer would end it
        return [n * 2 for n in part]

    results = list(workers.ordered_map(dies_on_zero, range(30), jobs=2))
    assert [n for _, part in results for n in part] == [n * 2 for n in range(30)]


def test_a_worker_that_dies_before_every_slice_is_submitted_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool refuses new work once a worker died; on a busy machine that happens while the
    slices are still being submitted (seen as a flaky failure of the test above)."""
    parent = os.getpid()

    def dies_on_zero(part: Any) -> list[int]:
        if 0 in part and os.getpid() != parent:
            os._exit(1)
        return [n * 2 for n in part]

    class DeathFirst(ProcessPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            future = super().submit(*args, **kwargs)
            if args[1] == 0:  # the dying slice: wait until the pool knows it is broken
                with contextlib.suppress(BrokenProcessPool):
                    future.result(timeout=10)
            return future

    monkeypatch.setattr(workers, "ProcessPoolExecutor", DeathFirst)
    results = list(workers.ordered_map(dies_on_zero, range(30), jobs=2))
    assert [n for _, part in results for n in part] == [n * 2 for n in range(30)]


def test_parallel_load_gives_the_serial_documents(tree: Path, parallel_from_two: list[int]) -> None:
    serial = list(load([str(tree)], jobs=1))
    parallel = list(load([str(tree)], jobs=2))
    assert parallel_from_two == [2]
    assert len(serial) > 600
    assert any(d.error for d in serial)
    assert any(d.obj is None for d in serial)
    assert any(isinstance((d.obj or {}).get("data", {}).get("at"), datetime) for d in serial)
    # repr: the same types too (True is not 1, a timestamp stays a datetime)
    assert [repr(d) for d in parallel] == [repr(d) for d in serial]


def test_parallel_audit_gives_the_serial_report(
    tree: Path, shipped_policies: PolicySet, parallel_from_two: list[int]
) -> None:
    serial = audit_paths([str(tree)], policy_set=shipped_policies, render=False, jobs=1)
    parallel_from_two.clear()
    parallel = audit_paths([str(tree)], policy_set=shipped_policies, render=False, jobs=2)
    assert parallel_from_two == [2, 2]  # parsed and evaluated by workers
    assert parallel.findings == serial.findings
    assert parallel.problems == serial.problems
    assert parallel.objects == serial.objects > 600
    for fmt in ("table", "json", "sarif", "junit"):
        assert render(parallel, fmt, verbose=True) == render(serial, fmt, verbose=True)
    results = {(f.policy, f.result, f.location.name) for f in parallel.findings}
    assert ("kustomization-dependencies", "fail", "a") in results  # lookups saw both files
    mutated = [f for f in parallel.findings if f.action == "mutated"]
    assert mutated
    assert all(f.location.line > 1 for f in mutated)  # at the field's line


def test_the_progress_line_follows_a_parallel_run(
    tmp_path: Path,
    shipped_policies: PolicySet,
    parallel_from_two: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    write_tree(tmp_path, 2000)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    report = audit_documents(load([str(tmp_path)], jobs=2), policy_set=shipped_policies, jobs=2)
    assert report.objects == 2000
    shown = terminal.getvalue()
    assert "\rfluxwarden: audited 0/2000 objects" in shown
    assert "\rfluxwarden: audited 2000/2000 objects" in shown
    assert shown.endswith("\r\033[K")


def test_the_cli_jobs_flag_chooses_the_processes_and_not_the_answer(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhook import cli

    fanned: list[int] = []
    real = workers.ordered_map

    def spy(*args: Any, jobs: int, **kwargs: Any) -> Any:
        fanned.append(jobs)
        return real(*args, jobs=jobs, **kwargs)

    monkeypatch.setattr(documents, "ordered_map", spy)
    monkeypatch.setattr(offline, "ordered_map", spy)
    answers = {}
    for jobs in ("1", "2"):
        fanned.clear()
        code = cli.main(["audit", "--no-render", "-o", "json", "--jobs", jobs, str(tree)])
        answers[jobs] = (code, capsys.readouterr().out)
        assert set(fanned) <= {int(jobs)}, (jobs, fanned)
        assert jobs == "1" or len(fanned) == 2, fanned  # parse, then evaluate, in 2 processes
    assert answers["1"] == answers["2"]
    code, out = answers["1"]
    assert code == 2  # the odd files are input errors
    assert out.count('"fail"') > 10  # and the fleet has findings: the comparison is not empty
