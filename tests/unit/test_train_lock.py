"""One trainer per checkpoint directory: the lock, its messages, and take-over after a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from archscale.train.lock import TrainerLock, TrainerLockHeld, lock_path, pid_alive

HOLD = """
import sys, time
from archscale.train.lock import TrainerLock
lock = TrainerLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_in_subprocess(directory) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_file_sits_next_to_the_directory(tmp_path):
    assert lock_path(tmp_path / "checkpoints" / "a1") == tmp_path / "checkpoints" / "a1.lock"
    assert lock_path(str(tmp_path / "checkpoints" / "a1") + "/") == tmp_path / "checkpoints" / "a1.lock"


def test_acquire_release_and_body(tmp_path):
    d = tmp_path / "checkpoints" / "a1"
    messages = []
    with TrainerLock(d, log=messages.append) as lock:
        assert lock.held
        body = json.loads(lock_path(d).read_text())
        assert body["pid"] == os.getpid() and body["host"] == socket.gethostname()
        assert body["checkpoint_dir"] == str(d) and body["started"]
        # a second holder, even in this process (another open file), is refused
        with pytest.raises(TrainerLockHeld, match=rf"{d}: checkpoint directory in use .* PID {os.getpid()}"):
            TrainerLock(d).acquire()
    assert not lock.held and lock_path(d).read_text() == ""  # released cleanly: empty body
    with TrainerLock(d, log=messages.append):
        pass
    assert messages == []  # nothing stale to report
    TrainerLock(d, enabled=False).acquire()  # disabled (ranks > 0): no-op


def test_live_holder_is_a_clear_error_and_a_killed_one_is_taken_over(tmp_path):
    d = tmp_path / "ckpt"
    proc = hold_in_subprocess(d)
    try:
        with pytest.raises(TrainerLockHeld) as exc:
            TrainerLock(d).acquire()
        msg = str(exc.value)
        assert str(d) in msg and f"PID {proc.pid} on host {socket.gethostname()}" in msg
        assert f"kill {proc.pid}" in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not pid_alive(proc.pid)
    assert json.loads(lock_path(d).read_text())["pid"] == proc.pid  # the killed trainer's body is left
    messages = []
    with TrainerLock(d, log=messages.append):  # the kernel released its flock: taken over
        assert json.loads(lock_path(d).read_text())["pid"] == os.getpid()
    (line,) = messages
    assert f"taking over the lock {lock_path(d)}" in line and f"PID {proc.pid} is dead" in line


def test_stale_body_from_another_host_or_unreadable(tmp_path):
    d = tmp_path / "ckpt"
    lock_path(d).write_text(json.dumps({"pid": 1, "host": "node-x", "started": "t"}))
    messages = []
    with TrainerLock(d, log=messages.append):
        pass
    assert "PID 1 on host node-x" in messages[0] and "no process holds the lock" in messages[0]
    lock_path(d).write_text("garbage")
    with TrainerLock(d, log=messages.append):
        pass
    assert "unreadable" in messages[1]


def test_pid_alive():
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid) and not pid_alive(0)
