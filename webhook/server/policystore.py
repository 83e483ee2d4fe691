"""The policy set in force, reloaded when its file changes (as a mounted ConfigMap does).

An invalid new file keeps the last good set, is logged, and counts a policy load error (once,
however many worker processes notice it). The last good set is the newest one any worker process
loaded (a copy they share), not necessarily the one this process held.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..engine import Mode, PolicySet, PolicySetError, parse_policy_set

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


class LastGood:
    """The last policy set text that loaded, in a directory all worker processes share.

    A worker that (re)starts while the mounted file is invalid starts from this copy instead of
    failing to boot (gunicorn's master would exit, and every replica crash-loop). The directory
    also records which bad files were already counted, so the load-error metric counts a bad
    file once, not once per worker.
    """

    FILE = "last-good-policies.yaml"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, text: str) -> None:
        target = self.directory / self.FILE
        try:
            if target.read_text(encoding="utf-8") == text:
                return
        except OSError:
            pass
        tmp = self.directory / f".{self.FILE}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)  # atomic: a worker reading it never sees half a file

    def load(self, source: Path) -> PolicySet:
        text = (self.directory / self.FILE).read_text(encoding="utf-8")
        return parse_policy_set(text, source=f"{source} (last good copy)")

    def first_to_report(self, stamp: FileStamp | None) -> bool:
        """True for exactly one caller per bad file version, across processes."""
        name = "error-" + "-".join(str(part) for part in stamp or (0, 0, 0))
        try:
            os.close(os.open(self.directory / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:
            return True  # cannot record it: count it rather than lose it
        return True


class PolicyStore:
    """Hands out the current policy set; checks the file at most every `interval` seconds.

    With `state_dir` (the server), a file that does not load, at start-up or later, gives way to
    the last good copy there; without it (tests, one process) the first load must succeed and a
    bad file later keeps the set in force.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
        ceiling: Mode | None = None,
    ) -> None:
        self.path = path
        self._ceiling = ceiling  # --mode / FLUXWARDEN_MODE: applied once per load
        self._interval, self._clock = interval, clock
        self._last_good = LastGood(state_dir) if state_dir else None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._stamp = _stamp(path)
        try:
            self._current = self._load()
        except PolicySetError as error:
            if self._last_good is None:
                raise  # no fallback: fail at start-up
            self._current = self._last_good.load(path).with_ceiling(ceiling)
            self._failed(error)
        self._checked = clock()

    def current(self) -> PolicySet:
        now = self._clock()
        if now - self._checked >= self._interval:
            with self._lock:
                if now - self._checked >= self._interval:
                    self._checked = now
                    self._reload_if_changed()
        return self._current

    def _load(self) -> PolicySet:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PolicySetError(f"{self.path}: cannot read: {error}") from error
        loaded = parse_policy_set(text, source=str(self.path)).with_ceiling(self._ceiling)
        if self._last_good is not None:
            self._last_good.save(text)
        return loaded

    def _failed(self, error: PolicySetError) -> None:
        self.last_error = str(error)
        log.error("policy set not loaded, keeping the last good one: %s", error)
        if self._last_good is None or self._last_good.first_to_report(self._stamp):
            from . import metrics  # here, not at import: the CLI loads policies without metrics

            metrics.POLICY_LOAD_ERRORS.inc()

    def _newest_good(self) -> PolicySet:
        """After a failed load: the last good copy. Another process may have loaded a newer good
        version than this one holds: a worker forked from gunicorn's master inherits the set the
        master loaded at start-up, and a worker can miss a version between two checks."""
        if self._last_good is not None:
            try:
                return self._last_good.load(self.path).with_ceiling(self._ceiling)
            except (OSError, PolicySetError) as error:
                log.error("last good policy copy not loaded, keeping the set in force: %s", error)
        return self._current

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp or stamp is None:
            return
        self._stamp = stamp
        try:
            self._current = self._load()
        except PolicySetError as error:
            self._failed(error)
            self._current = self._newest_good()
            return
        self.last_error = None
        log.info("policy set reloaded from %s (pid %d)", self.path, os.getpid())
