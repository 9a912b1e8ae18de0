"""The launcher: a refused second launcher leaves the running trainer's job.json alone;
the trainer stops (SIGTERM) when its launcher is killed and when the snakemake above it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from archscale.train import launcher
from archscale.train.lock import TrainerLock
from test_train import make_job

#: Stands in for the trainer: says its PID, then waits; SIGTERM writes the marker and exits 143.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    def term(signum, frame):
        open(sys.argv[1], "w").write("SIGTERM")
        sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    print("child", os.getpid(), flush=True)
    time.sleep(120)
""")

#: The launcher's process (the rule script): runs the child with launcher.run.
LAUNCHER = textwrap.dedent("""
    import os, sys
    from archscale.train.launcher import run
    print("launcher", os.getpid(), flush=True)
    sys.exit(run([sys.executable, "-c", sys.argv[2], sys.argv[1]], env=dict(os.environ), stdout=sys.stdout))
""")


def _env() -> dict[str, str]:
    src = str(Path(launcher.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _pid_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _wait_for(path: Path, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.1)
    return path.exists()


def _read_pids(proc: subprocess.Popen, n: int) -> dict[str, int]:
    pids = {}
    while len(pids) < n:
        line = proc.stdout.readline()
        assert line, f"no output: {pids}"
        key, _, value = line.strip().partition(" ")
        if value.isdigit():
            pids[key] = int(value)
    return pids


def test_refused_launcher_does_not_touch_the_running_jobs_files(tmp_path):
    first = make_job(tmp_path, tmp_path / "manifest.json", tokens=1000)
    job_json = launcher.write_job(first)
    before = job_json.read_bytes()
    second = make_job(tmp_path, tmp_path / "manifest.json", tokens=2000)
    with TrainerLock(first.checkpoint_dir, log=lambda msg: None):  # the running trainer
        out = tmp_path / "launch.log"
        with open(out, "w") as fh:
            assert launcher.launch(second, gpus=0, stdout=fh) == launcher.EXIT_LOCKED
    assert job_json.read_bytes() == before
    assert "in use by another trainer" in out.read_text()
    assert json.loads(before)["budget"]["tokens"] == 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_trainer_gets_sigterm_when_its_launcher_is_killed(tmp_path):
    marker = tmp_path / "child-terminated"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(marker), CHILD], stdout=subprocess.PIPE,
                            text=True, env=_env())
    try:
        pids = _read_pids(proc, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_for(marker, 10), "the trainer was not told to stop"
        assert _pid_gone(pids["child"], 10)
    finally:
        proc.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux")
def test_trainer_stops_when_the_snakemake_above_it_is_killed(tmp_path):
    # snakemake -> (shell) -> rule script (launcher) -> trainer; SIGKILL of snakemake leaves the
    # script running, re-parented: the launcher notices and stops the trainer.
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    marker = tmp_path / "child-terminated"
    fake.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                    f"subprocess.run(['/bin/sh', '-c', '\"$0\" -c \"$1\" \"$2\" \"$3\"; true', sys.executable, "
                    f"{LAUNCHER!r}, {str(marker)!r}, {CHILD!r}])\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake)], stdout=subprocess.PIPE, text=True, env=_env())
    pids: dict[str, int] = {}
    try:
        pids = _read_pids(proc, 2)
        chain = launcher.supervisors(pids["launcher"])
        assert chain and chain[-1][0] == proc.pid, chain  # up to the outermost snakemake
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_for(marker, 15), "the trainer kept running after snakemake died"
        assert _pid_gone(pids["child"], 10) and _pid_gone(pids["launcher"], 10)
    finally:
        proc.kill()
        for pid in (pids.get("child"), pids.get("launcher")):
            if pid and not _pid_gone(pid, 0.1):
                os.kill(pid, signal.SIGKILL)


def test_supervisors_without_snakemake_is_the_parent_alone():
    chain = launcher.supervisors()
    assert [pid for pid, _, _ in chain] == [os.getppid()] or not os.path.exists("/proc")
    assert launcher.chain_broken(chain) is None
