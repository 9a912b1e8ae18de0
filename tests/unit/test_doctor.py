"""archscale doctor: each check's verdict and fix, the table, and the command on this machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from archscale import doctor
from archscale.doctor import Check


def test_cuda_versions_and_the_wheel_index_of_a_driver():
    assert doctor.cuda_version("12.4") == (12, 4) and doctor.cuda_version(12040) == (12, 4)
    assert doctor.cuda_version(13020) == (13, 2) and doctor.cuda_version(None) is None
    assert doctor.wheel_index_for((12, 4)) == "https://download.pytorch.org/whl/cu124"
    assert doctor.wheel_index_for((12, 5)) == "https://download.pytorch.org/whl/cu124"  # the newest at or below
    assert doctor.wheel_index_for((13, 2)).endswith("/cu132")
    assert doctor.wheel_index_for((11, 2)) is None


def test_python_check():
    assert doctor.python_check((3, 12, 1)).status == "ok"
    c = doctor.python_check((3, 11, 7))
    assert c.status == "ok" and "0.17+ needs 3.12" in c.found
    c = doctor.python_check((3, 14, 0))
    assert c.status == "FAIL" and "3.11-3.13" in c.fix


def test_torch_check_range_build_and_import():
    assert doctor.torch_check("2.13.0+cpu", None, None) == Check("torch", "ok", "2.13.0+cpu (CPU-only build)")
    assert doctor.torch_check("2.15.0+cu132", "13.2", None).found == "2.15.0+cu132 (CUDA 13.2 build)"
    old = doctor.torch_check("2.9.1", "12.8", None)
    assert old.status == "FAIL" and old.fix.startswith("pip install 'torch>=2.13.0a0,<2.16'")
    broken = doctor.torch_check("2.13.0", None, "ImportError: libcudart.so.13")
    assert broken.status == "FAIL" and "libcudart" in broken.found and "torch==2.13.0" in broken.fix
    assert doctor.torch_check(None, None, "x").status == "FAIL"


def test_megatron_check_names_package_and_fix():
    assert doctor.megatron_check("0.19.2", None).status == "ok"
    new = doctor.megatron_check("0.20.0", None)
    assert new.status == "FAIL" and "megatron-core>=0.16.1,<0.20" in new.fix
    assert doctor.megatron_check(None, None).fix == "pip install 'megatron-core>=0.16.1,<0.20'"
    missing = doctor.megatron_check("0.17.1", "ModuleNotFoundError: No module named 'triton'")
    assert missing.status == "FAIL" and missing.fix == "pip install triton (megatron-core 0.17.1 imports it)"
    other = doctor.megatron_check("0.16.1", "ImportError: cannot import name 'x'")
    assert other.fix == "pip install --force-reinstall --no-deps 'megatron-core==0.16.1'"


def test_driver_and_cuda_match():
    assert doctor.cuda_match_check("13.2", {"gpus": []}).status == "skip"
    driver = {"driver": "550.54", "cuda": "12.4", "gpus": ["NVIDIA H100"] * 2}
    too_new = doctor.cuda_match_check("13.2", driver)
    assert too_new.status == "FAIL" and "CUDA 13.2" in too_new.found and "--index-url https://download.pytorch.org/whl/cu124" in too_new.fix
    assert doctor.cuda_match_check("12.4", driver).status == "ok"
    cpu_build = doctor.cuda_match_check(None, driver)
    assert cpu_build.status == "FAIL" and "cu124" in cpu_build.fix
    gpus, nvml = doctor.driver_checks(driver, torch_sees=2)
    assert gpus.status == "ok" and "2 GPU(s): NVIDIA H100" in gpus.found and nvml.status == "ok"
    assert doctor.driver_checks(driver, torch_sees=0)[0].status == "FAIL"
    none, nvml = doctor.driver_checks({"error": "NVML unavailable (Shared Library Not Found)", "gpus": []}, 0)
    assert none.status == "skip" and nvml.status == "skip"
    assert doctor.driver_checks({"error": "nvidia-ml-py is not installed", "gpus": []}, 0)[1].status == "warn"


def test_table_numbers_each_fix():
    checks = [Check("python", "ok", "3.12.1"), Check("megatron-core", "FAIL", "0.20.0", "pip install x"),
              Check("NVML", "warn", "absent", "pip install nvidia-ml-py")]
    text = doctor.format_table(checks)
    assert "megatron-core  FAIL    0.20.0 [1]" in text and "NVML           warn    absent [2]" in text
    assert "1 problem(s) a job would fail on" in text and "  [2] pip install nvidia-ml-py" in text
    assert "ready" in doctor.format_table(checks[:1])
    with pytest.raises(ValueError, match="status 'bad'"):
        Check("x", "bad", "y")


def _doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archscale.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_doctor_names_megatron_core_and_the_fix_when_its_import_fails(tmp_path):
    """A megatron-core that does not import (simulated: a package earlier on the path raising
    ImportError) fails the doctor, naming the package, the error and a fix."""
    core = tmp_path / "megatron" / "core"
    core.mkdir(parents=True)
    (tmp_path / "megatron" / "__init__.py").write_text("")
    (core / "__init__.py").write_text("raise ImportError(\"No module named 'nvidia_resiliency_ext'\")\n")
    out = _doctor("--no-runs", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert out.returncode == 1, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("megatron-core"))
    assert "FAIL" in row and "import fails: ImportError: No module named 'nvidia_resiliency_ext'" in row
    assert "[1] pip install nvidia_resiliency_ext (megatron-core" in out.stdout


@pytest.mark.slow
def test_doctor_on_this_machine_trains_decodes_and_exits_0():
    out = _doctor()
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    for name in ("python", "torch", "megatron-core", "2-step training", "4-token decode"):
        assert "  ok  " in rows[name], rows[name]
    assert "loss " in rows["2-step training"] and "after 2 steps" in rows["2-step training"]
    assert "ready: nothing a job would fail on" in out.stdout


def test_keep_installed_pins_what_the_environment_has_or_refuses():
    ngc = "2.13.0a0+79aa17489c.nv26.01"
    assert doctor.keep_installed({"torch": ngc, "megatron-core": "0.19.2"}) == [f"torch=={ngc}", "megatron-core==0.19.2"]
    assert doctor.keep_installed({"torch": "2.15.0", "megatron-core": None}) == ["torch==2.15.0"]  # pip adds mcore
    assert doctor.keep_installed({"torch": None, "megatron-core": None}) == []
    with pytest.raises(ValueError, match=r"refusing .* torch 2\.9\.1 is outside the tested range >=2\.13\.0a0,<2\.16"):
        doctor.keep_installed({"torch": "2.9.1", "megatron-core": "0.16.1"})
    with pytest.raises(ValueError, match=r"megatron-core 0\.14\.0 is outside .* fix: pip install 'megatron-core"):
        doctor.keep_installed({"torch": "2.13.0", "megatron-core": "0.14.0"})


def test_install_into_env_script_refuses_out_of_range(monkeypatch, capsys):
    """tools/install-into-env prints the constraints, or exits 1 with the refusal before pip runs."""
    monkeypatch.setattr(doctor, "installed_version", {"torch": "2.16.1", "megatron-core": "0.16.1"}.get)
    assert doctor.main_keep_installed() == 1
    err = capsys.readouterr().err
    assert err.startswith("archscale: refusing to install archscale into this environment") and "torch 2.16.1" in err
    monkeypatch.setattr(doctor, "installed_version", {"torch": "2.13.0+cpu", "megatron-core": "0.16.1"}.get)
    assert doctor.main_keep_installed() == 0
    out = capsys.readouterr()
    assert out.out.split() == ["torch==2.13.0+cpu", "megatron-core==0.16.1"] and "keeping torch 2.13.0+cpu" in out.err


def test_a_run_that_raises_is_a_failed_row(capsys):
    def boom():
        raise RuntimeError("Found no NVIDIA driver on your system.\nmore")

    row = doctor._guarded("4-token decode", boom)
    assert row.status == "FAIL" and row.found == "RuntimeError: Found no NVIDIA driver on your system."
    assert "Traceback" in capsys.readouterr().err
