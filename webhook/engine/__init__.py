"""The pure policy engine: object + request facts + lookups + policy set in, a decision out.

It imports neither flask nor kubernetes (enforced by import-linter).
"""

from .evaluate import evaluate
from .model import (
    Decision,
    JsonObject,
    Lookups,
    LookupUnavailable,
    Mode,
    NoLookups,
    ObjectRef,
    PolicyResult,
    Request,
    Target,
    Webhook,
    target_of,
)
from .policyset import PolicySet, PolicySetError, parse_mode, parse_policy_set

__all__ = [
    "Decision",
    "JsonObject",
    "LookupUnavailable",
    "Lookups",
    "Mode",
    "NoLookups",
    "ObjectRef",
    "PolicyResult",
    "PolicySet",
    "PolicySetError",
    "Request",
    "Target",
    "Webhook",
    "evaluate",
    "parse_mode",
    "parse_policy_set",
    "target_of",
]
