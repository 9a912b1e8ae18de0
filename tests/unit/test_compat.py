"""The CPU compatibility layer: what it patches, and that it refuses to run with CUDA."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the layer is for machines without CUDA")
def test_activate_redirects_cuda_to_cpu():
    out = _run("""
        import torch
        from archscale import compat
        assert not compat.is_active()
        compat.activate(); compat.activate()          # idempotent
        assert compat.is_active()
        assert torch.cuda.current_device() == "cpu"
        torch.cuda.synchronize()
        assert torch.zeros(3, device="cuda").device.type == "cpu"
        assert torch.arange(4, device=torch.device("cuda", 0)).device.type == "cpu"
        assert torch.ones(2).cuda().device.type == "cpu"
        assert torch.ones(2).to("cuda").device.type == "cpu"
        assert torch.ones(2).to(device="cuda:0", dtype=torch.float64).dtype == torch.float64
        s = torch.cuda.current_stream()       # megatron-core 0.19's start_grad_sync waits on it
        s.wait_event(torch.cuda.Event()); s.wait_stream(s); s.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); b.record(); b.synchronize()
        assert a.elapsed_time(b) >= 0.0
        from megatron.core.optimizer import clip_grads
        p = torch.nn.Parameter(torch.ones(4)); p.grad = torch.full((4,), 3.0)
        clip_grads.clip_grad_by_total_norm_fp32([p], max_norm=1.0, total_norm=6.0)
        assert torch.allclose(p.grad, torch.full((4,), 3.0 / (6.0 + 1e-6)))
        q = torch.nn.Parameter(torch.ones(4)); q.grad = torch.full((4,), 0.1)
        clip_grads.clip_grad_by_total_norm_fp32([q], max_norm=1.0, total_norm=0.2)   # below the norm: untouched
        assert torch.equal(q.grad, torch.full((4,), 0.1))
        print("OK")
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK"


@pytest.mark.slow
def test_activate_refuses_when_cuda_is_available():
    out = _run("""
        import torch
        torch.cuda.is_available = lambda: True
        from archscale import compat
        try:
            compat.activate()
        except RuntimeError as exc:
            assert "CPU-only" in str(exc)
            assert not compat.is_active()
            print("REFUSED")
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "REFUSED"


@pytest.mark.slow
def test_setup_runtime_activates_compat_only_without_cuda():
    out = _run("""
        import sys
        from archscale.model import resolve_runtime, setup_runtime
        rt = resolve_runtime(cuda_available=False)
        assert "archscale.compat" not in sys.modules
        setup_runtime(rt, seed=0)
        from archscale import compat
        assert compat.is_active()
        from megatron.core import parallel_state
        assert parallel_state.model_parallel_is_initialized()
        print("OK")
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the layer is for machines without CUDA")
def test_megatron_imports_without_torch_compile_on_cpu():
    """activate() imports megatron-core with its jit_fuser as megatron's no-op: torch._dynamo is
    not loaded by the import, the decorated functions are the plain ones, and later imports of
    megatron modules stay eager; torch.compile itself is restored."""
    out = _run("""
        import sys
        import torch
        compile_ = torch.compile
        from archscale import compat
        compat.activate()
        assert "torch._dynamo" not in sys.modules, "megatron's import loaded torch._dynamo"
        assert torch.compile is compile_
        from megatron.core import jit
        assert jit.jit_fuser is jit.noop_decorator
        from megatron.core.transformer.utils import gelu_impl       # decorated at megatron's import
        from megatron.core.fusions.fused_bias_swiglu import swiglu  # imported after activate()
        for fn in (gelu_impl, swiglu):
            assert type(fn).__name__ == "function" and not hasattr(fn, "_torchdynamo_orig_callable"), fn
        x = torch.linspace(-2, 2, 5)
        assert torch.allclose(gelu_impl(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-3)
        print("OK")
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK"


# ---- versions: the tested range and the API form of each megatron-core release ------------------


def test_requirements_are_pyproject_dependencies():
    """compat.REQUIREMENTS and pyproject.toml name the same tested ranges (one truth, checked)."""
    import pathlib
    import tomllib

    from packaging.requirements import Requirement

    from archscale import compat

    root = pathlib.Path(__file__).resolve().parents[2]
    deps = [Requirement(d) for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]]
    specs = {r.name: str(r.specifier) for r in deps if r.name in compat.REQUIREMENTS}
    from packaging.specifiers import SpecifierSet

    assert {k: SpecifierSet(v) for k, v in specs.items()} == {
        k: SpecifierSet(v) for k, v in compat.REQUIREMENTS.items()
    }
    for name, (low, high) in compat.TESTED.items():
        assert low in SpecifierSet(compat.REQUIREMENTS[name]) and high in SpecifierSet(compat.REQUIREMENTS[name])


@pytest.mark.parametrize(
    "text, inference_config, decode_only_state",
    [("0.16.1", False, False), ("0.17.0", True, False), ("0.18.2", True, False), ("0.19.2", True, True),
     ("0.19.2+c7ff187", True, True), ("0.20.0rc1", True, True)],
)
def test_megatron_api_forms(text, inference_config, decode_only_state):
    from archscale.compat import megatron_api

    api = megatron_api(text)
    assert api.inference_config is inference_config and api.decode_only_state is decode_only_state


def test_megatron_api_reads_package_metadata():
    from importlib.metadata import version

    from archscale.compat import megatron_api

    assert str(megatron_api().version) == version("megatron-core")
    with pytest.raises(RuntimeError, match="megatron-core: version 'main' .* not a PEP 440"):
        megatron_api("main")


def test_check_versions_names_the_package_range_and_fix():
    from archscale.compat import REQUIREMENTS, check_versions

    assert check_versions({"torch": "2.13.0+cpu", "megatron-core": "0.16.1"}) == []
    assert check_versions({"torch": "2.15.0+cu132", "megatron-core": "0.19.2"}) == []
    assert check_versions({"torch": "2.13.0a0+79aa17489c.nv26.01", "megatron-core": "0.18.2"}) == []  # NGC's naming
    (torch_old,) = check_versions({"torch": "2.12.1", "megatron-core": "0.16.1"})
    assert torch_old.startswith("torch 2.12.1 is outside the tested range") and REQUIREMENTS["torch"] in torch_old
    assert "fix: pip install 'torch" in torch_old and "index that matches the driver" in torch_old
    (mcore_new,) = check_versions({"torch": "2.13.0", "megatron-core": "0.20.0"})
    assert mcore_new.startswith("megatron-core 0.20.0 is outside") and "tested 0.16.1 to 0.19.2" in mcore_new
    (missing,) = check_versions({"torch": "2.13.0", "megatron-core": None})
    assert missing == f"megatron-core is not installed; fix: pip install 'megatron-core{REQUIREMENTS['megatron-core']}'"
    assert check_versions() == []  # this environment is in range


@pytest.mark.slow
def test_provenance_records_metadata_versions_not_megatrons_git_suffix():
    """From 0.18 megatron's __version__ carries the enclosing checkout's hash; provenance must not."""
    out = _run("""
        from importlib.metadata import version
        import megatron.core.package_info as info
        info.__version__ = version("megatron-core") + "+c7ff187"   # what 0.18+ reports inside a checkout
        from archscale.train.metrics import versions
        v = versions()
        assert v["megatron_core"] == version("megatron-core"), v
        assert v["torch"] == version("torch") and v["archscale"] == version("archscale"), v
        print("OK")
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK"
