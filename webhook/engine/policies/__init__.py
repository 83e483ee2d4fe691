"""The policy registry: adding a policy means adding its module and one line here."""

from __future__ import annotations

from typing import Any

from .base import Params, Policy, Report
from .controller_lockdown import ControllerLockdown
from .controller_requeue_dependency import ControllerRequeueDependency
from .fleet_job_tolerations import FleetJobTolerations
from .flux_api_versions import FluxApiVersions
from .flux_intervals import FluxIntervals
from .flux_source_trust import FluxSourceTrust
from .helmrelease_drift_detection import HelmReleaseDriftDetection
from .helmrelease_interval import HelmReleaseInterval
from .helmrelease_release_identity import HelmReleaseReleaseIdentity
from .helmrelease_remediation import HelmReleaseRemediation
from .irc_single_replica import IrcSingleReplica
from .kustomization_dependencies import KustomizationDependencies
from .kustomization_safety import KustomizationSafety
from .source_controller_storage import SourceControllerStorage
from .tenant_cross_namespace_refs import TenantCrossNamespaceRefs
from .tenant_service_account import TenantServiceAccount

ALL_POLICIES: dict[str, Policy[Any]] = {
    policy.name: policy
    for policy in (
        IrcSingleReplica(),
        HelmReleaseDriftDetection(),
        FleetJobTolerations(),
        HelmReleaseInterval(),
        SourceControllerStorage(),
        ControllerRequeueDependency(),
        KustomizationDependencies(),
        HelmReleaseRemediation(),
        HelmReleaseReleaseIdentity(),
        FluxIntervals(),
        FluxApiVersions(),
        FluxSourceTrust(),
        TenantServiceAccount(),
        TenantCrossNamespaceRefs(),
        KustomizationSafety(),
        ControllerLockdown(),
    )
}

__all__ = ["ALL_POLICIES", "Params", "Policy", "Report"]
