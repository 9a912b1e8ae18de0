"""One trainer per checkpoint directory.

A trainer holds ``results/checkpoints/{arch}.lock`` (next to the directory, so that the
directory itself can be moved aside whole) for as long as it runs. The lock is an exclusive
``fcntl.flock`` on that file: the kernel releases it when the process exits, however it exits
(SIGKILL included), so a lock is never left held by a dead trainer. The file's body, JSON
``{"pid", "host", "started", "checkpoint_dir"}``, only serves the messages:

* lock held: :class:`TrainerLockHeld` naming the PID, host, start time and directory;
* lock free but a body left behind (its trainer was killed): taken over with a log line saying
  whose lock it was and whether that PID is dead (same host) or on another host.

``flock`` on a network file system works across hosts only where the file system supports it
(NFSv4, Lustre with ``flock`` mounts); elsewhere it protects against trainers on one host only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

LOCK_SUFFIX = ".lock"


class TrainerLockHeld(RuntimeError):
    """Another live trainer holds the checkpoint directory."""


def lock_path(checkpoint_dir: str | Path) -> Path:
    """``results/checkpoints/{arch}`` -> ``results/checkpoints/{arch}.lock``."""
    d = Path(checkpoint_dir)
    return d.with_name(d.name + LOCK_SUFFIX)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:  # a zombie has exited: its lock is released already
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a trainer that has not written its PID yet"
    started = holder.get("started")
    since = f" since {started}" if started else ""
    return f"PID {holder.get('pid')} on host {holder.get('host')}{since}"


class TrainerLock:
    """Exclusive lock of a checkpoint directory; a context manager (``enabled=False``: no-op,
    for the ranks other than 0 of a multi-process job)."""

    def __init__(self, checkpoint_dir: str | Path, log: Callable[[str], None] = print, enabled: bool = True):
        self.directory = Path(checkpoint_dir)
        self.path = lock_path(checkpoint_dir)
        self.log = log
        self.enabled = enabled
        self._fh = None

    def _read(self) -> dict[str, Any]:
        self._fh.seek(0)
        text = self._fh.read()
        if not text.strip():
            return {}
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return {"unreadable": text[:200]}
        return body if isinstance(body, dict) else {"unreadable": text[:200]}

    def acquire(self) -> "TrainerLock":
        if not self.enabled or self._fh is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # not inherited by child processes (PEP 446)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()
                raise
            self._fh = fh
            holder = self._read()
            self._fh = None
            fh.close()
            raise TrainerLockHeld(
                f"{self.directory}: checkpoint directory in use by another trainer, {_describe(holder)} "
                f"(lock {self.path}). Two trainers must not write one directory: wait for that one to "
                f"finish, or stop it (kill {holder.get('pid', '<pid>')} on {holder.get('host', 'its host')}) "
                "and run again"
            ) from None
        self._fh = fh
        previous = self._read()
        if previous:
            self.log(f"[archscale] {self.directory}: taking over the lock {self.path} left by "
                     f"{_describe(previous)}: {self._stale_reason(previous)}")
        body = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint_dir": str(self.directory)}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(body) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        return self

    @staticmethod
    def _stale_reason(previous: dict[str, Any]) -> str:
        if "unreadable" in previous:
            return "unreadable lock body, and no process holds the lock"
        if previous.get("host") == socket.gethostname():
            pid = int(previous.get("pid") or 0)
            if pid_alive(pid):
                return f"PID {pid} is alive but does not hold the lock (a different process now)"
            return f"PID {pid} is dead"
        return "no process holds the lock (its trainer on that host ended without releasing it)"

    def release(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()  # an empty body: released cleanly
            fh.flush()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    @property
    def held(self) -> bool:
        return self._fh is not None

    def __enter__(self) -> "TrainerLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
