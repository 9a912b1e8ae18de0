"""The CPU compatibility layer: what it patches, and that it refuses to run with CUDA."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


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
