"""Values from Secrets are never printed: a Secret's own data, and the values Flux substitutes
from a Secret (`postBuild.substituteFrom`), are replaced by `<secret>` in what the audit says."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Sequence

from ..engine import JsonObject
from .findings import Finding

SECRET_MARK = "<secret>"


def secret_data(obj: JsonObject) -> list[str]:
    """The values of a Secret's `data` (decoded) and `stringData`: never printed."""
    if obj.get("kind") != "Secret":
        return []
    values: list[str] = []
    for name in ("data", "stringData"):
        field = obj.get(name)
        for value in field.values() if isinstance(field, dict) else ():
            values.append(str(value))
            if name == "data":
                with contextlib.suppress(ValueError):  # not base64 (UnicodeDecodeError too)
                    values.append(base64.b64decode(str(value), validate=True).decode("utf-8"))
    return [v for v in values if v]


def hide_secrets(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret value in it replaced by `<secret>` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, SECRET_MARK)
    return text


def without_secrets(finding: Finding, secrets: Sequence[str]) -> Finding:
    """`finding` with the secret values hidden in its object's name and its messages."""
    location = finding.location
    return dataclasses.replace(
        finding,
        location=dataclasses.replace(
            location,
            name=hide_secrets(location.name, secrets),
            namespace=hide_secrets(location.namespace, secrets),
        ),
        messages=tuple(hide_secrets(m, secrets) for m in finding.messages),
    )
