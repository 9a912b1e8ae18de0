"""Serving at the deployment: output tokens/s, batch-1 latency and energy per output token of an
architecture, measured where a throughput record exists, else from the calibrated cost model."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ...arch import Architecture
from .inputs import ASSUMPTION, COST_MODEL, MEASURED, Deployment, LifetimeError, estimate


class Serving:
    """Output tokens/s, batch-1 latency and energy per output token at a :class:`Deployment`.

    ``records``: measured throughput records (docs/pipeline.md ``throughput/{arch}.json``) by arch
    id, each as ``(where, record)``; ``cost_model``: the calibrated roofline
    (``throughput/cost_model.json``); ``rate_fn``: any other output tokens/s function (labelled
    ``rate_source``). A measured record at the deployment's workload wins; otherwise the cost
    model; an architecture with neither is an error.
    """

    def __init__(self, deployment: Deployment, cost_model: dict | None = None,
                 records: Mapping[str, tuple[str, dict]] | None = None, level: float = 0.95,
                 rate_fn: Callable[[Architecture], float] | None = None, rate_source: str = ASSUMPTION):
        self.deployment, self.cost_model, self.records = deployment, cost_model, dict(records or {})
        self.level, self.rate_fn, self.rate_source = level, rate_fn, rate_source
        self._cache: dict[tuple[str, str], Any] = {}
        self._ratio = self._cost_model_ratio() if cost_model else None
        self._check_batch()

    def _device(self) -> dict:
        key = self.cost_model.get("default_device")
        try:
            return self.cost_model["devices"][key]
        except (KeyError, TypeError):
            raise LifetimeError(f"cost model: no calibration for its default device '{key}'") from None

    def _cost_model_ratio(self) -> tuple[float, float, str]:
        """Interval of measured/predicted output tokens/s over the cost model's calibration points."""
        dev = self._device()
        pts = [p for p in dev.get("points") or [] if p.get("predicted_output_tokens_per_s")]
        ratio = np.array([p["output_tokens_per_s"] / p["predicted_output_tokens_per_s"] for p in pts], float)
        q = ((1 - self.level) / 2, 1 - (1 - self.level) / 2)
        if ratio.size >= 3:
            lo, hi = np.quantile(ratio, q)
            return float(lo), float(hi), f"{ratio.size} calibration points, measured/predicted {lo:.3g}-{hi:.3g}"
        err = dev.get("mean_abs_rel_error")
        if err is None:
            return 1.0, 1.0, "no calibration error recorded: interval unknown"
        return 1.0 - float(err), 1.0 + float(err), f"+-{err:.3g} (mean absolute relative error, {ratio.size} points)"

    def _check_batch(self) -> None:
        """The deployment's batch size must be measured, or calibrated in the cost model."""
        if self.rate_fn is not None:
            return
        b = int(self.deployment.batch_size)
        measured = sorted({int(r["batch_size"]) for _, rec in self.records.values() for r in rec.get("records", [])})
        calibrated = []
        if self.cost_model:
            calibrated = sorted(int(k) for k in (self._device().get("spearman") or {}).get("by_batch_size", {}))
        if not self.records and not self.cost_model:
            raise LifetimeError("missing throughput: give a cost model (--cost-model) or measured throughput "
                                "records (--throughput-dir) for the serving cost")
        if b not in measured and b not in calibrated:
            raise LifetimeError(
                f"deployment batch size {b} is unknown: measured at {measured or 'none'}, cost model calibrated at "
                f"{calibrated or 'none'}; deploy at one of them (--deploy-batch-size / search.lifetime.batch_size)")

    def _record(self, arch: Architecture, batch: int, mode: str, context: int | None) -> tuple[str, dict] | None:
        hit = self.records.get(arch.arch_id)
        if hit is None:
            return None
        where, rec = hit
        d = self.deployment
        for r in rec.get("records", []):
            if (int(r.get("batch_size", -1)) == batch and r.get("mode", "prefill+decode") == mode
                    and (mode != "decode_at_context" or int(r.get("context") or r["input_len"]) == context)
                    and int(r.get("output_len", -1)) == d.output_len
                    and (mode == "decode_at_context" or int(r.get("input_len", -1)) == d.input_len)):
                return where, r
        return None

    def _measured(self, where: str, r: dict) -> dict[str, Any]:
        med = (r.get("median") or {}).get("output_tokens_per_s") or {}
        if med.get("value") is not None:
            why = med.get("withheld_reason")
            return estimate(med["value"], med.get("low"), med.get("high"), MEASURED,
                            f"{where}: median of {med.get('n')} repeats" + (f" (interval withheld: {why})" if why else ""))
        return estimate(r["output_tokens_per_s"], source=MEASURED, detail=f"{where}: mean (no median recorded)")

    def _predicted(self, arch: Architecture, batch: int, mode: str, context: int | None) -> dict[str, Any]:
        from ...throughput.roofline import predict_output_tokens_per_s

        d = self.deployment
        try:
            v = predict_output_tokens_per_s(self.cost_model, arch, d.input_len, d.output_len, batch, mode=mode,
                                            context=context)
        except (ValueError, KeyError) as exc:
            raise LifetimeError(f"cost model cannot predict {arch.arch_id} at the deployment: {exc}") from None
        lo, hi, why = self._ratio
        return estimate(v, v * lo, v * hi, COST_MODEL, why)

    def rate(self, arch: Architecture) -> dict[str, Any]:
        """Output tokens/s at the deployment (an :func:`estimate`)."""
        key = ("rate", arch.arch_id)
        if key not in self._cache:
            d = self.deployment
            hit = self._record(arch, d.batch_size, d.mode, d.context)
            if hit is not None:
                self._cache[key] = self._measured(*hit)
            elif self.cost_model:
                self._cache[key] = self._predicted(arch, d.batch_size, d.mode, d.context)
            elif self.rate_fn is not None:
                self._cache[key] = estimate(self.rate_fn(arch), source=self.rate_source)
            else:
                raise LifetimeError(
                    f"missing throughput for {arch.arch_id}: no measured record at batch {d.batch_size}, "
                    f"{d.input_len} in / {d.output_len} out ({d.mode}) and no cost model (--cost-model)")
            if not self._cache[key]["value"] or self._cache[key]["value"] <= 0:
                raise LifetimeError(f"throughput of {arch.arch_id}: {self._cache[key]['value']} is not positive")
        return self._cache[key]

    def latency_ms(self, arch: Architecture) -> dict[str, Any] | None:
        """Batch-1 milliseconds per output token, decoding at the deployment context (None: unknown)."""
        key = ("latency", arch.arch_id)
        if key not in self._cache:
            ctx = self.deployment.latency_context
            hit = self._record(arch, 1, "decode_at_context", ctx)
            if hit is not None:
                e = self._measured(*hit)
            elif self.cost_model:
                e = self._predicted(arch, 1, "decode_at_context", ctx)
            else:
                e = None
            self._cache[key] = None if e is None else estimate(
                1e3 / e["value"], None if e["high"] is None else 1e3 / e["high"],
                None if e["low"] is None else 1e3 / e["low"], e["source"], e["detail"])
        return self._cache[key]

    def energy_j_per_token(self, arch: Architecture) -> dict[str, Any] | None:
        """NVML joules per output token of the measured record at the deployment (None: not measured)."""
        d = self.deployment
        hit = self._record(arch, d.batch_size, d.mode, d.context)
        if hit is None or hit[1].get("energy_j_per_output_token") is None:
            return None
        return estimate(hit[1]["energy_j_per_output_token"], source=MEASURED, detail=f"{hit[0]}: NVML")
