"""Golden cases: `tests/cases/<policy>/<case>/` holds the input (`case.yaml`), the expected decision
(`expected.yaml`) and the expected patched object (`patched.yaml`, only when something changes).

`make golden` rewrites the expected files from the engine's current answers; review reads the diff.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from webhook.cli import SHIPPED_POLICIES
from webhook.engine import (
    Decision,
    Lookups,
    NoLookups,
    PolicySet,
    Request,
    Target,
    evaluate,
    parse_policy_set,
    target_of,
)
from webhook.lookups.offline import OfflineLookups

CASES = Path(__file__).parent / "cases"


@dataclass
class Case:
    path: Path
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self.spec["object"])

    def policy_set(self) -> PolicySet:
        raw = yaml.safe_load(SHIPPED_POLICIES.read_text())
        if "ceiling" in self.spec:
            raw["spec"]["mode"] = self.spec["ceiling"]
        for entry in raw["spec"]["policies"]:
            override = self.spec.get("policyOverrides", {}).get(entry["name"], {})
            entry["mode"] = override.get("mode", entry["mode"])
            entry["params"] = {**entry.get("params", {}), **override.get("params", {})}
        return parse_policy_set(yaml.safe_dump(raw), source=f"{self.id}/policies")

    def request(self) -> Request:
        obj = self.spec["object"]
        derived = target_of(obj)
        given = self.spec.get("request", {})
        gvk = given.get("kind", {})
        target = Target(
            group=gvk.get("group", derived.group),
            version=gvk.get("version", derived.version),
            kind=gvk.get("kind", derived.kind),
            resource=given.get("resource", derived.resource),
            sub_resource=given.get("subResource", ""),
            namespace=given.get("namespace", derived.namespace),
            name=given.get("name", derived.name),
        )
        return Request(
            target=target,
            operation=given.get("operation", "CREATE"),
            dry_run=given.get("dryRun", False),
            user=given.get("user", "tester"),
        )

    def lookups(self) -> Lookups:
        spec = self.spec.get("lookups", {})
        if spec.get("unavailable"):
            return NoLookups()
        return OfflineLookups([self.spec["object"], *spec.get("objects", [])])

    def decide(self) -> Decision:
        return evaluate(
            self.obj,
            request=self.request(),
            policy_set=self.policy_set(),
            lookups=self.lookups(),
            webhook=self.spec.get("webhook", "all"),
            # YAML 1.1 reads an unquoted `off` as false.
            mode_override="off" if self.spec.get("mode") is False else self.spec.get("mode"),
        )


def load_cases() -> list[Case]:
    return [
        Case(path=path.parent, spec=yaml.safe_load(path.read_text()))
        for path in sorted(CASES.glob("*/*/case.yaml"))
    ]


def expected_files(case: Case, decision: Decision) -> dict[str, str | None]:
    """The text of expected.yaml and patched.yaml (None: the file must not exist)."""
    patched = None
    if decision.patch:
        patched_obj = jsonpatch.apply_patch(case.obj, decision.patch)
        patched = yaml.safe_dump(patched_obj, sort_keys=False)
    return {
        "expected.yaml": yaml.safe_dump(decision.to_dict(), sort_keys=False, width=120),
        "patched.yaml": patched,
    }


def regenerate() -> None:
    for case in load_cases():
        for name, text in expected_files(case, case.decide()).items():
            target = case.path / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text)
        print(f"regenerated {case.id}")


if __name__ == "__main__":
    regenerate()
