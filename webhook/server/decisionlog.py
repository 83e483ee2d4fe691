"""One structured JSON log line per admission decision (and JSON for every other log line)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..admission import AdmissionRequest
from ..engine import Decision

log = logging.getLogger("fluxwarden.decision")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_decision(
    *, webhook: str, admission: AdmissionRequest, decision: Decision, duration: float
) -> None:
    target = admission.request.target
    fields = {
        "uid": admission.uid,
        "webhook": webhook,
        "kind": f"{target.api_version}/{target.kind}",
        "resource": target.resource + (f"/{target.sub_resource}" if target.sub_resource else ""),
        "namespace": target.namespace,
        "name": target.name,
        "operation": admission.request.operation,
        "dryRun": admission.request.dry_run,
        "user": admission.request.user,
        "allowed": decision.allowed,
        "patchOps": len(decision.patch),
        "results": [
            {"policy": r.policy, "mode": r.mode, "result": r.result, "action": r.action}
            | ({"messages": r.messages} if r.result == "error" else {})
            for r in decision.results
        ],
        "durationMs": round(duration * 1000, 3),
    }
    log.info("admission decision", extra={"fields": fields})
