"""No process of a trainer survives it: after SIGKILL of the trainer (or of the checkpoint
writer's owner alone), the writer's Manager server (which ignores SIGTERM by design) and the
multiprocessing resource tracker exit within seconds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from test_train import make_job, manifest, run_job, start  # noqa: F401 - manifest is a fixture

WRITER_ALONE = """
import sys, time
from megatron.core.dist_checkpointing.strategies import filesystem_async
from archscale.train import checkpointing
checkpointing._signal_proof_writer_queue()
q = filesystem_async._results_queue
q.put("x"); assert q.get(timeout=30) == "x"
from multiprocessing import resource_tracker
resource_tracker.ensure_running()  # as dist_checkpointing's writer processes do
print("ready", checkpointing._WRITER_MANAGER._process.pid, flush=True)
time.sleep(600)
"""


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


def test_writer_helpers_exit_when_their_owner_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", WRITER_ALONE], stdout=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["ready"], line
        server = int(line[1])
        children = descendants(proc.pid)
        cmdlines = [" ".join(p.cmdline()) for p in children]
        assert server in [p.pid for p in children]
        assert any("resource_tracker" in c for c in cmdlines), cmdlines
        # the server still ignores SIGTERM (SLURM signals every process of a step)
        psutil.Process(server).send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert psutil.Process(server).is_running()
    finally:
        kill_and_check(proc, children)


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
    children = descendants(proc.pid)
    assert children, "the trainer should have started the checkpoint writer's helper processes"
    # a second trainer of the same checkpoint directory is refused, naming the first
    code, out = run_job(job)
    assert code == 1 and f"{job.checkpoint_dir}: checkpoint directory in use by another trainer, PID {proc.pid}" in out
    kill_and_check(proc, children)
    # the killed trainer's lock is taken over, and its checkpoints resumed, by the next one
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    assert f"PID {proc.pid} is dead" in out and "resumed from" in out
