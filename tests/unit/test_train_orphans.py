"""No process of a trainer survives it: after SIGKILL of the trainer, whatever it started (the
checkpoint writer's forked workers, the multiprocessing resource tracker) exits within seconds.
The writer's results stay in the trainer's process (no Manager server: test_train)."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pytest
from test_train import make_job, manifest, run_job, start  # noqa: F401 - manifest is a fixture

def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def survivors(procs: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within_s
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return alive


def kill_and_check(proc: subprocess.Popen, children: list[psutil.Process]) -> None:
    names = {p.pid: " ".join(p.cmdline()) for p in children}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = survivors(children, within_s=10)
    for p in left:  # do not leave them behind even when the test fails
        p.kill()
    assert not left, [(p.pid, names[p.pid]) for p in left]


@pytest.mark.slow
def test_killed_trainer_leaves_no_process_behind(tmp_path, manifest):
    job = make_job(tmp_path, manifest, tokens=60 * 512, hardware={"checkpoint_interval": 5})
    proc = start(job)
    seen = []
    for line in proc.stdout:  # the writer's helpers exist once the first checkpoint was written
        seen.append(line)
        if line.startswith("[archscale] checkpoint "):
            break
    assert seen and seen[-1].startswith("[archscale] checkpoint "), "".join(seen)[-3000:]
    proc.send_signal(signal.SIGSTOP)  # frozen, holding its lock, until the SIGKILL below
    children = descendants(proc.pid)  # whatever is left of the writer's helpers must die with it
    # a second trainer of the same checkpoint directory is refused, naming the first
    code, out = run_job(job)
    assert code == 1 and f"{job.checkpoint_dir}: checkpoint directory in use by another trainer, PID {proc.pid}" in out
    kill_and_check(proc, children)
    # the killed trainer's lock is taken over, and its checkpoints resumed, by the next one
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    assert f"PID {proc.pid} is dead" in out and "resumed from" in out
