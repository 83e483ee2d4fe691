"""Golden cases: `tests/cases/<policy>/<case>/` holds the input (`case.yaml`), the expected decision
(`expected.yaml`) and the expected patched object (`patched.yaml`, only when something changes).

A case runs with its own policy only (the directory it sits in, as configured in the shipped
set, plus the case's `policyOverrides`), so changing one policy never rewrites another policy's
goldens; the parity tests run every case through the whole set and every entry point.
`make golden` rewrites the expected files from the engine's current answers; review reads the diff.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
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
    Webhook,
    evaluate,
    parse_mode,
    parse_policy_set,
    request_for,
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

    @property
    def policy(self) -> str:
        return self.path.parent.name

    @property
    def profile(self) -> Path:
        """The shipped policy set the case's policy runs in: the default one, else the first
        profile (policies/*.yaml) that lists it."""
        return profile_of(self.policy)

    def full_policy_set(self) -> PolicySet:
        """The case's profile with the case's overrides and ceiling (`mode`, as --mode sets it)."""
        raw = yaml.safe_load(self.profile.read_text())
        if "ceiling" in self.spec:
            raw["spec"]["mode"] = self.spec["ceiling"]
        for entry in raw["spec"]["policies"]:
            override = self.spec.get("policyOverrides", {}).get(entry["name"], {})
            entry["mode"] = override.get("mode", entry["mode"])
            entry["params"] = {**entry.get("params", {}), **override.get("params", {})}
        policy_set = parse_policy_set(yaml.safe_dump(raw), source=f"{self.id}/policies")
        # YAML 1.1 reads an unquoted `off` as false.
        mode = self.spec.get("mode")
        return policy_set.with_ceiling(
            parse_mode("off" if mode is False else mode) if mode else None
        )

    def policy_set(self) -> PolicySet:
        """The case's own policy alone."""
        full = self.full_policy_set()
        own = tuple(p for p in full.policies if p.policy.name == self.policy)
        return replace(full, policies=own)

    def request(self) -> Request:
        given = self.spec.get("request", {})
        gvk = given.get("kind", {})
        return request_for(
            self.spec["object"],
            group=gvk.get("group"),
            version=gvk.get("version"),
            kind=gvk.get("kind"),
            resource=given.get("resource"),
            resource_group=given.get("resourceGroup"),
            sub_resource=given.get("subResource", ""),
            namespace=given.get("namespace"),
            name=given.get("name"),
            operation=given.get("operation", "CREATE"),
            dry_run=given.get("dryRun", False),
            user=given.get("user", "tester"),
            old_object=copy.deepcopy(given.get("oldObject")),
        )

    @property
    def webhook(self) -> Webhook:
        webhook: Webhook = self.spec.get("webhook", "all")
        return webhook

    def lookups(self) -> Lookups:
        spec = self.spec.get("lookups", {})
        if spec.get("unavailable"):
            return NoLookups()
        return OfflineLookups([self.spec["object"], *spec.get("objects", [])])

    def decide(self, policy_set: PolicySet | None = None) -> Decision:
        return evaluate(
            self.obj,
            request=self.request(),
            policy_set=policy_set or self.policy_set(),
            lookups=self.lookups(),
            webhook=self.webhook,
        )


def profile_of(policy: str) -> Path:
    profiles = sorted(p for p in SHIPPED_POLICIES.parent.glob("*.yaml") if p != SHIPPED_POLICIES)
    for path in [SHIPPED_POLICIES, *profiles]:
        raw = yaml.safe_load(path.read_text())
        if raw.get("kind") == "PolicySet" and any(
            entry.get("name") == policy for entry in raw["spec"]["policies"]
        ):
            return path
    return SHIPPED_POLICIES


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
    """Every golden file of the project: policy cases, audit output formats, fix cases."""
    from tests.audit import test_fix, test_formats, test_not_audited

    for case in load_cases():
        for name, text in expected_files(case, case.decide()).items():
            target = case.path / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text)
        print(f"regenerated {case.id}")
    for path in [
        *test_formats.regenerate(),
        *test_fix.regenerate(),
        *test_not_audited.regenerate(),
    ]:
        print(f"regenerated {path}")


if __name__ == "__main__":
    regenerate()
