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
    request_for,
    target_of,
)
from .policyset import (
    OWN_NAMESPACE,
    ConfiguredPolicy,
    PolicySet,
    PolicySetError,
    parse_mode,
    parse_policy_set,
)

__all__ = [
    "OWN_NAMESPACE",
    "ConfiguredPolicy",
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
    "request_for",
    "target_of",
]
