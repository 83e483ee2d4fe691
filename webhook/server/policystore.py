"""The policy set in force, reloaded when its file changes (as a mounted ConfigMap does).

An invalid new file keeps the old set, is logged, and counts a policy load error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..engine import PolicySet, PolicySetError, parse_policy_set

log = logging.getLogger("fluxwarden.policies")

FileStamp = tuple[int, int, int]


def _stamp(path: Path) -> FileStamp | None:
    try:
        stat = path.stat()  # follows the ..data symlink a ConfigMap volume swaps atomically
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def load_policy_file(path: Path) -> PolicySet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicySetError(f"{path}: cannot read: {error}") from error
    return parse_policy_set(text, source=str(path))


class PolicyStore:
    """Hands out the current policy set; checks the file at most every `interval` seconds."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval, self._clock = interval, clock
        self._stamp = _stamp(path)
        self._current = load_policy_file(path)  # the first load must succeed: fail at start-up
        self._checked = clock()
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def current(self) -> PolicySet:
        now = self._clock()
        if now - self._checked >= self._interval:
            with self._lock:
                if now - self._checked >= self._interval:
                    self._checked = now
                    self._reload_if_changed()
        return self._current

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp or stamp is None:
            return
        self._stamp = stamp
        try:
            self._current = load_policy_file(self.path)
        except PolicySetError as error:
            self.last_error = str(error)
            log.error("policy set not reloaded, keeping the previous one: %s", error)
            from . import metrics  # here, not at import: the CLI loads policies without metrics

            metrics.POLICY_LOAD_ERRORS.inc()
            return
        self.last_error = None
        log.info("policy set reloaded from %s (pid %d)", self.path, os.getpid())
