"""``search.lifetime`` from the config, and the entry points of the CLI and the workflow: one search
target's lifetime search, from objects or from the files of a study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ...arch import Architecture
from ...law.laws import Law
from ..anyscale import LossTarget
from .inputs import DEFAULT_N_FACTORS, Deployment, LifetimeError, Prices, check_demand
from .optimum import lifetime_search
from .serving import Serving


@dataclass(frozen=True)
class LifetimeSettings:
    """``search.lifetime`` resolved against the study (deployment, prices, the N factors)."""

    tokens: float
    prices: Prices
    deployment: Deployment
    max_latency_ms: float | None = None
    n_factors: tuple[float, ...] = DEFAULT_N_FACTORS
    level: float = 0.95
    x_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        p = self.prices
        return {"tokens": self.tokens, "max_latency_ms": self.max_latency_ms, "n_factors": list(self.n_factors),
                "level": self.level, "x_range": None if self.x_range is None else list(self.x_range),
                "deployment": {k: v for k, v in self.deployment.to_dict().items() if k != "mode"},
                "prices": {"price_per_gpu_hour": p.price_per_gpu_hour, "mfu": p.mfu, "peak_flops": p.peak_flops,
                           "seq_length": p.seq_length, "energy_price_per_kwh": p.energy_price_per_kwh,
                           "sources": [list(s) for s in p.sources]}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LifetimeSettings":
        p = dict(data["prices"])
        p["sources"] = tuple(tuple(s) for s in p.get("sources") or ())
        return cls(tokens=check_demand(data["tokens"], "search.lifetime.tokens"), prices=Prices(**p),
                   deployment=Deployment(**data["deployment"]), max_latency_ms=data.get("max_latency_ms"),
                   n_factors=tuple(data.get("n_factors") or DEFAULT_N_FACTORS), level=float(data.get("level", 0.95)),
                   x_range=None if data.get("x_range") is None else tuple(data["x_range"]))


def settings_from_config(config: Mapping[str, Any]) -> LifetimeSettings | None:
    """``search.lifetime`` of a validated config (None while its ``tokens`` is null): the
    deployment defaults to the search's workload, MFU and the training device to ``compute``."""
    from ...plan import peak_flops

    lt = config["search"]["lifetime"]
    if lt["tokens"] is None:
        return None
    tput, compute = config["throughput"], dict(config["compute"])
    if lt["gpu_model"]:
        compute.update(gpu_model=lt["gpu_model"], peak_flops=None)
    context = lt["context"] if lt["context"] is not None else (
        (tput["context"] or tput["input_len"]) if tput["mode"] == "decode_at_context" else None)
    batch = lt["batch_size"] or config["search"]["batch_size"] or max(tput["batch_sizes"])
    sources = (("price_per_gpu_hour", "config search.lifetime.price_per_gpu_hour"),
               ("mfu", "config search.lifetime.mfu" if lt["mfu"] else "config compute.mfu"),
               ("peak_flops", "config compute (gpu_model / peak_flops)"),
               ("seq_length", "config training.seq_length"),
               ("energy_price_per_kwh", "config search.lifetime.energy_price_per_kwh"))
    prices = Prices(price_per_gpu_hour=float(lt["price_per_gpu_hour"]), mfu=float(lt["mfu"] or compute["mfu"]),
                    peak_flops=peak_flops(compute), seq_length=int(config["training"]["seq_length"]),
                    energy_price_per_kwh=lt["energy_price_per_kwh"], sources=sources)
    deployment = Deployment(batch_size=int(batch), input_len=int(lt["input_len"] or tput["input_len"]),
                            output_len=int(lt["output_len"] or tput["output_len"]), context=context)
    return LifetimeSettings(tokens=check_demand(lt["tokens"], "search.lifetime.tokens"), prices=prices,
                            deployment=deployment, max_latency_ms=lt["max_latency_ms"],
                            n_factors=tuple(float(f) for f in lt["n_factors"]), level=float(lt["level"]),
                            x_range=None if lt["x_range"] is None else tuple(lt["x_range"]))


def read_records(paths: Iterable[str]) -> dict[str, tuple[str, dict]]:
    """Throughput records (``throughput/{arch}.json``) by arch id, each with its path."""
    from ...io import read_json

    out = {}
    for p in paths:
        rec = read_json(p)
        if "records" not in rec:
            raise LifetimeError(f"{p}: not a throughput record (no 'records'); expected results/throughput/{{arch}}.json")
        out[str(rec.get("arch_id") or Architecture.from_dict(rec["arch"]).arch_id)] = (str(p), rec)
    return out


def picks_of_result(result: Mapping[str, Any]) -> dict[str, Architecture | None]:
    """Baseline, Panda and Surefire of an Algorithm-1 result (``results/search/{target}/result.json``)."""
    return {role: None if result.get(role) is None else Architecture.from_dict(dict(result[role], name=result[role].get("name") or role))
            for role in ("baseline", "panda", "surefire")}


def lifetime_for_target(target, settings: LifetimeSettings, law: Law, cost_model: dict | None,
                        records: Mapping[str, tuple[str, dict]], result: Mapping[str, Any] | None = None,
                        x_range: tuple[float, float] | None = None, form: str | None = None) -> dict[str, Any]:
    """The lifetime search of one :class:`~archscale.search.targets.SearchTarget`; with the
    Algorithm-1 ``result`` its baseline, Panda and Surefire are the compared choices."""
    serving = Serving(settings.deployment, cost_model, records, settings.level)
    if isinstance(target.loss_target, str):
        loss_target = LossTarget(baseline=target.baseline, source="predicted")
    else:
        loss_target = target.loss_target
    gqas = sorted(set(target.gqa_candidates))
    out = lifetime_search(
        law, target.scale, target.tokens, settings.tokens, serving, settings.prices, loss_target=loss_target,
        form=form, n_factors=settings.n_factors, gqa=gqas, x_range=settings.x_range or x_range or (0.02, 0.3),
        max_latency_ms=settings.max_latency_ms, level=settings.level,
        choices=None if result is None else picks_of_result(result))
    out["target"] = target.name
    return out


def lifetime_from_files(target: dict, settings: dict, result_path: str, fit_path: str, cost_model_path: str,
                        runs_path: str, record_paths: Iterable[str], form: str | None = None) -> dict[str, Any]:
    """The workflow rule's entry point: read the inputs, run :func:`lifetime_for_target`."""
    import pandas as pd

    from ...io import read_json
    from ...law import load_law
    from ..algorithm import fitted_ranges
    from ..targets import SearchTarget

    law = load_law(fit_path)
    x_range, _ = fitted_ranges(read_json(fit_path), pd.read_parquet(runs_path))
    out = lifetime_for_target(SearchTarget.from_dict(target), LifetimeSettings.from_dict(settings), law,
                              read_json(cost_model_path), read_records(record_paths), read_json(result_path),
                              x_range=x_range, form=form)
    out["inputs"] = {"result": str(result_path), "fit": str(fit_path), "cost_model": str(cost_model_path)}
    return out
