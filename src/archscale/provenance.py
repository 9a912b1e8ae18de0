"""Installed package versions, recorded in every record for provenance."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def versions(*packages: str) -> dict[str, str | None]:
    """``{package: installed version}`` for the distributions named; ``None`` when not installed."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def throughput_versions(engine: str) -> dict[str, str | None]:
    """What a throughput record depends on (vLLM only when it is the engine)."""
    return versions("torch", "megatron-core", "archscale", "nvidia-ml-py", *(("vllm",) if engine == "vllm" else ()))
