"""Architecture search: Algorithm 1 of the paper (method.md section 6).

For one *target* (a scale with its layers, head dim and N, a token budget D and a loss
target) the search

1. enumerates the valid architectures at the scale: a fine grid of ``d/sqrt(N)`` and ``r``
   at the walk's base GQA is resolved with :func:`archscale.arch.resolve` (infeasible points
   are skipped and counted; points that land on the same architecture are merged);
2. predicts each architecture's loss with the fitted conditional law (both forms; the
   configured ``form`` drives the picks) and its inference efficiency (output tokens/s)
   with the calibrated roofline cost model;
3. picks **Panda** (lowest predicted loss) and a predicted **Surefire** (highest predicted
   efficiency among the architectures whose predicted loss is within the target);
4. plans the GQA local search: the ``measure_top_k`` most efficient architectures within
   the target are re-resolved at every GQA of ``gqa_candidates`` from the base GQA upward
   (same d_model and r, heads re-resolved so that GQA divides them), and together with
   Panda and the baseline they are *measured*;
5. walks GQA upward from the base for each of them and stops at the first GQA whose measured
   throughput falls below the base's (the paper's early stop); the measured-fastest
   architecture within the loss target over all walks is Surefire.

The split into :func:`prepare` (steps 1-4) and :func:`select` (step 5) mirrors the
workflow, where a Snakemake checkpoint writes the measurement plan and one throughput job
per listed architecture runs before the selection. :func:`run_search` runs both in one
process with any measurement function (the CLI uses the cost model or live runs).

The law and the cost model are consumed through their library APIs
(:mod:`archscale.law.conditional`, :mod:`archscale.throughput.roofline`), imported lazily
so that this module can be imported without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .arch import Architecture, GridPoint, InfeasiblePoint, Scale, resolve
from .config import ConfigError

FORMS = ("multiplicative", "additive")
#: Broad grid used to tell whether a scale admits any architecture at all (plan time).
BROAD_D_OVER_SQRT_N = (0.01, 3.0)
BROAD_R = (0.2, 10.0)

Efficiency = Callable[[Architecture], float]


class SearchError(ValueError):
    """A search that cannot run; the message names the target and what to change."""


# ---- target and settings -----------------------------------------------------------------
@dataclass(frozen=True)
class SearchTarget:
    """One search target: where to search and what loss an answer must reach."""

    name: str
    scale: Scale
    tokens: int
    loss_target: float | str | None = None
    gqa_candidates: tuple[int, ...] = (1, 2, 4, 8, 16)
    base_gqa: int | None = None
    baseline: Architecture | None = None

    def __post_init__(self) -> None:
        if not self.gqa_candidates:
            raise SearchError(f"search target '{self.name}': gqa_candidates is empty; list at least one GQA")
        if isinstance(self.loss_target, str) and self.baseline is None:
            raise SearchError(
                f"search target '{self.name}': loss_target names architecture '{self.loss_target}' "
                "but no such architecture was given"
            )

    @property
    def walk_base_gqa(self) -> int:
        """The GQA the walk starts from: ``base_gqa``, else 4 when listed, else the smallest."""
        if self.base_gqa is not None:
            return int(self.base_gqa)
        return 4 if 4 in self.gqa_candidates else min(self.gqa_candidates)

    @property
    def walk_gqas(self) -> list[int]:
        base = self.walk_base_gqa
        return sorted({base, *(g for g in self.gqa_candidates if g >= base)})

    def to_dict(self) -> dict[str, Any]:
        s = self.scale
        return {
            "name": self.name,
            "scale": {
                "name": s.name, "n_target": s.n_target, "layers": s.layers, "head_dim": s.head_dim,
                "vocab": s.vocab, "tied": s.tied, "d_multiple": s.d_multiple, "ffn_multiple": s.ffn_multiple,
                "n_tolerance": s.n_tolerance, "r_tolerance": s.r_tolerance, "tokens": s.tokens,
                "tokens_per_param": s.tokens_per_param,
            },
            "tokens": int(self.tokens),
            "loss_target": self.loss_target,
            "gqa_candidates": list(self.gqa_candidates),
            "base_gqa": self.base_gqa,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchTarget":
        scale = Scale(**data["scale"])
        baseline = Architecture.from_dict(data["baseline"]) if data.get("baseline") else None
        return cls(
            name=data["name"], scale=scale, tokens=int(data["tokens"]), loss_target=data.get("loss_target"),
            gqa_candidates=tuple(int(g) for g in data.get("gqa_candidates") or (1, 2, 4, 8, 16)),
            base_gqa=data.get("base_gqa"), baseline=baseline,
        )


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` section of the config (minus targets) plus the measured workload."""

    form: str = "multiplicative"
    d_over_sqrt_n: tuple[float, ...] = ()
    r: tuple[float, ...] = ()
    grid_points: int = 41
    measure_top_k: int = 2
    loss_target_source: str = "predicted"
    input_len: int = 64
    output_len: int = 32
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise SearchError(f"search.form: '{self.form}' is not one of {list(FORMS)}")
        if self.loss_target_source not in ("predicted", "observed"):
            raise SearchError("search.loss_target_source: use 'predicted' or 'observed'")
        if self.grid_points < 2:
            raise SearchError("search.grid_points: use at least 2 points per axis")

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form, "d_over_sqrt_n": list(self.d_over_sqrt_n), "r": list(self.r),
            "grid_points": self.grid_points, "measure_top_k": self.measure_top_k,
            "loss_target_source": self.loss_target_source, "input_len": self.input_len,
            "output_len": self.output_len, "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSettings":
        keys = cls.__dataclass_fields__
        kw = {k: data[k] for k in keys if k in data and data[k] is not None}
        for k in ("d_over_sqrt_n", "r"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)


def settings_from_config(config: dict) -> SearchSettings:
    """Search settings from a validated config; the batch size defaults to the largest measured."""
    search, tput = config.get("search", {}), config.get("throughput", {})
    batch_sizes = tput.get("batch_sizes") or [1]
    batch = search.get("batch_size")
    if batch is None:
        batch = max(batch_sizes)
    elif batch not in batch_sizes:
        raise ConfigError(
            f"search.batch_size: {batch} is not among throughput.batch_sizes {batch_sizes}; "
            "the GQA walk compares measured throughput at that batch size, so list it there"
        )
    return SearchSettings(
        form=search.get("form", "multiplicative"),
        d_over_sqrt_n=tuple(search.get("d_over_sqrt_n") or ()),
        r=tuple(search.get("r") or ()),
        grid_points=int(search.get("grid_points", 41)),
        measure_top_k=int(search.get("measure_top_k", 2)),
        loss_target_source=search.get("loss_target_source", "predicted"),
        input_len=int(tput.get("input_len", 64)),
        output_len=int(tput.get("output_len", 32)),
        batch_size=int(batch),
    )


def targets_from_config(config: dict, scales: dict[str, Scale] | None = None) -> dict[str, SearchTarget]:
    """Resolve ``search.targets`` against the config's scales and explicit architectures."""
    from .plan import scale_from_config

    entries = {e["name"]: e for e in config.get("scales", [])}
    if scales is None:
        scales = {name: scale_from_config(e, config) for name, e in entries.items()}
    targets: dict[str, SearchTarget] = {}
    for i, t in enumerate(config.get("search", {}).get("targets", [])):
        where = f"search.targets[{i}] '{t.get('name')}'"
        if t["name"] in targets:
            raise ConfigError(f"{where}: duplicate target name")
        if t["scale"] not in scales:
            raise ConfigError(f"{where}: scale '{t['scale']}' is not one of the configured scales {sorted(scales)}")
        scale = scales[t["scale"]]
        baseline = None
        loss_target = t.get("loss_target")
        if isinstance(loss_target, str):
            names = {a["name"]: a for a in entries[scale.name].get("architectures", [])}
            if loss_target not in names:
                raise ConfigError(
                    f"{where}: loss_target '{loss_target}' is neither a number nor an explicit architecture "
                    f"of scale '{scale.name}' (its architectures: {sorted(names) or 'none'}); add it under "
                    f"scales[{scale.name}].architectures or give a number"
                )
            ex = names[loss_target]
            baseline = Architecture(
                d_model=ex["d_model"], ffn=ex["ffn"], layers=scale.layers, heads=ex["heads"],
                kv_heads=ex["kv_heads"], head_dim=scale.head_dim, vocab=scale.vocab, tied=scale.tied,
                scale=scale.name, name=ex["name"],
            )
        gqas = tuple(int(g) for g in t.get("gqa_candidates", (1, 2, 4, 8, 16)))
        try:
            targets[t["name"]] = SearchTarget(
                name=t["name"], scale=scale, tokens=int(t.get("tokens") or scale.train_tokens),
                loss_target=loss_target, gqa_candidates=gqas, base_gqa=t.get("base_gqa"), baseline=baseline,
            )
        except SearchError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return targets


# ---- the law and the efficiency measure ----------------------------------------------------
class LawModel:
    """The fitted conditional law (``results/fit/conditional.json``) as a loss predictor."""

    def __init__(self, conditional: dict, runs: pd.DataFrame | None = None):
        forms = conditional.get("forms") or {}
        self.forms = [f for f in FORMS if f in forms and forms[f]]
        if not self.forms:
            raise SearchError("conditional fit: no fitted form under 'forms'; re-run the fit")
        self.conditional = conditional
        self.runs = runs

    def l_opt(self, n: int, tokens: int) -> float:
        """``L_opt(N, D)`` as the fit used it (its stored table, or its Chinchilla fit)."""
        from .law.conditional import reference_loss

        try:
            return float(reference_loss(self.conditional, n, tokens))
        except ValueError as exc:
            raise SearchError(f"reference loss at N={n:,}, D={tokens:,}: {exc}") from None

    def predict(self, d_over_sqrt_n: float, r: float, l_opt: float) -> dict[str, float]:
        from .law.conditional import predict_loss

        forms = self.conditional["forms"]
        return {f: float(predict_loss(dict(forms[f], form=f), d_over_sqrt_n, r, l_opt)) for f in self.forms}

    def optimum(self, form: str) -> dict[str, Any]:
        return dict(self.conditional["forms"][form].get("optimum") or {})


def cost_model_efficiency(cost_model: dict, input_len: int, output_len: int, batch_size: int) -> Efficiency:
    """Predicted output tokens/s from the calibrated roofline model (the search's IN(P))."""
    from .throughput.roofline import predict_output_tokens_per_s

    def efficiency(arch: Architecture) -> float:
        return float(predict_output_tokens_per_s(cost_model, arch, input_len, output_len, batch_size))

    return efficiency


# ---- grid and enumeration ------------------------------------------------------------------
def fitted_ranges(conditional: dict, runs: pd.DataFrame | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """The (d/sqrt(N), r) box the law was fitted on: runs with r inside the fit's r_range."""
    r_lo, r_hi = (float(v) for v in conditional.get("r_range") or BROAD_R)
    if runs is None or len(runs) == 0 or "d_over_sqrt_n" not in runs or "mlp_attn_ratio" not in runs:
        raise SearchError(
            "the default search grid spans the fitted range, which needs the runs table "
            "(d_over_sqrt_n, mlp_attn_ratio); give the runs, or set search.d_over_sqrt_n and search.r"
        )
    used = runs[(runs["mlp_attn_ratio"] >= r_lo) & (runs["mlp_attn_ratio"] <= r_hi)]
    if "valid_loss" in used:
        used = used[np.isfinite(used["valid_loss"].astype(float))]
    if used.empty:
        raise SearchError(f"no run has r inside the fit's r_range [{r_lo}, {r_hi}]; set search.d_over_sqrt_n and search.r")
    x = (float(used["d_over_sqrt_n"].min()), float(used["d_over_sqrt_n"].max()))
    r = (max(r_lo, float(used["mlp_attn_ratio"].min())), min(r_hi, float(used["mlp_attn_ratio"].max())))
    return x, r


def grid_axes(
    settings: SearchSettings, conditional: dict | None = None, runs: pd.DataFrame | None = None
) -> tuple[list[float], list[float], str]:
    """The d/sqrt(N) and r axes: the configured lists, else a log-spaced grid over the fitted box."""
    xs, rs = list(settings.d_over_sqrt_n), list(settings.r)
    source = "config"
    if not xs or not rs:
        (x_lo, x_hi), (r_lo, r_hi) = fitted_ranges(conditional or {}, runs)
        n = settings.grid_points
        if not xs:
            xs = sorted(set(np.geomspace(x_lo, x_hi, n).round(6).tolist()))
        if not rs:
            rs = sorted(set(np.geomspace(r_lo, r_hi, n).round(6).tolist()))
        source = "fitted range"
    return xs, rs, source


@dataclass
class Space:
    """The valid architectures found on a grid (merged by id) and what could not be resolved."""

    archs: dict[str, Architecture] = field(default_factory=dict)
    requested: dict[str, tuple[float, float]] = field(default_factory=dict)
    points: int = 0
    infeasible: int = 0
    examples: list[str] = field(default_factory=list)


def enumerate_space(scale: Scale, xs: Iterable[float], rs: Iterable[float], gqa: int, keep_examples: int = 3) -> Space:
    """Resolve every (d/sqrt(N), r) pair at ``gqa``; infeasible points are counted, not raised."""
    space = Space()
    rs = list(rs)
    for x in xs:
        for r in rs:
            space.points += 1
            try:
                arch = resolve(scale, GridPoint(r=float(r), gqa=int(gqa), d_over_sqrt_n=float(x), origin="search"))
            except InfeasiblePoint as exc:
                space.infeasible += 1
                if len(space.examples) < keep_examples:
                    space.examples.append(str(exc))
                continue
            if arch.arch_id not in space.archs:
                space.archs[arch.arch_id] = arch
                space.requested[arch.arch_id] = (float(x), float(r))
    return space


def require_feasible(target: SearchTarget, space: Space, xs: Sequence[float], rs: Sequence[float]) -> None:
    if space.archs:
        return
    s = target.scale
    examples = "\n    ".join(space.examples) or "(no grid points)"
    raise SearchError(
        f"search target '{target.name}': no valid architecture at scale '{s.name}' "
        f"(N={s.n_target:,}, {s.layers} layers, head_dim {s.head_dim}, vocab {s.vocab}) on the grid "
        f"d/sqrt(N) in [{min(xs, default=float('nan')):.4g}, {max(xs, default=float('nan')):.4g}] x "
        f"r in [{min(rs, default=float('nan')):.4g}, {max(rs, default=float('nan')):.4g}] at GQA "
        f"{target.walk_base_gqa}: all {space.points} points are infeasible, for example:\n    {examples}\n"
        "  change the scale (n_target, head_dim, layers, d_multiple/ffn_multiple, n_tolerance/r_tolerance), "
        "the search grid (search.d_over_sqrt_n, search.r) or the target's gqa_candidates/base_gqa"
    )


def check_target_feasible(target: SearchTarget, settings: SearchSettings, points: int = 25) -> int:
    """Plan-time check: raise :class:`SearchError` when the scale admits no architecture at all.

    Uses the configured axes when both are given, else a broad log grid (d/sqrt(N) in
    0.01-3, r in 0.2-10). Returns the number of distinct valid architectures found.
    """
    xs = list(settings.d_over_sqrt_n) or np.geomspace(*BROAD_D_OVER_SQRT_N, points).tolist()
    rs = list(settings.r) or np.geomspace(*BROAD_R, points).tolist()
    space = enumerate_space(target.scale, xs, rs, target.walk_base_gqa)
    require_feasible(target, space, xs, rs)
    return len(space.archs)


# ---- scoring, Pareto front and picks -------------------------------------------------------
ARCH_COLUMNS = [
    "arch_id", "scale", "layers", "d_model", "heads", "kv_heads", "head_dim", "ffn", "gqa", "vocab", "tied",
    "params_non_embedding", "params_total", "d_over_sqrt_n", "mlp_attn_ratio",
]


def arch_record(arch: Architecture) -> dict[str, Any]:
    d = arch.to_dict()
    out = {k: d[k] for k in ARCH_COLUMNS}
    out["name"] = arch.name
    out["kv_cache_bytes_per_token"] = arch.kv_cache_bytes_per_token("bf16")
    return out


def score(
    archs: Iterable[Architecture], law: LawModel, l_opt: float, efficiency: Efficiency, form: str
) -> pd.DataFrame:
    """One row per architecture: predicted loss (every fitted form) and predicted efficiency."""
    if form not in law.forms:
        raise SearchError(f"search.form '{form}' was not fitted (fitted forms: {law.forms}); change search.form or fit.forms")
    rows = []
    for arch in archs:
        row = arch_record(arch)
        losses = law.predict(arch.d_over_sqrt_n, arch.mlp_attn_ratio, l_opt)
        for f, v in losses.items():
            row[f"loss_{f}"] = v
        row["loss"] = losses[form]
        row["pred_output_tokens_per_s"] = float(efficiency(arch))
        rows.append(row)
    df = pd.DataFrame(rows)
    bad = df[~np.isfinite(df["loss"]) | ~np.isfinite(df["pred_output_tokens_per_s"])] if len(df) else df
    if len(bad):
        raise SearchError(
            f"non-finite predicted loss or efficiency for {len(bad)} architecture(s), e.g. {bad['arch_id'].iloc[0]}; "
            "check the fit coefficients and the cost model"
        )
    return df


def pareto_mask(loss: Sequence[float], efficiency: Sequence[float]) -> np.ndarray:
    """True where no other point has lower-or-equal loss and higher-or-equal efficiency (one strictly)."""
    loss, eff = np.asarray(loss, float), np.asarray(efficiency, float)
    order = np.lexsort((-eff, loss))  # by loss, then by efficiency descending
    mask = np.zeros(len(loss), bool)
    best = -np.inf
    for i in order:
        if eff[i] > best:
            mask[i] = True
            best = eff[i]
    return mask


def pick_panda(df: pd.DataFrame) -> pd.Series:
    """Lowest predicted loss (ties: higher efficiency)."""
    return df.sort_values(["loss", "pred_output_tokens_per_s"], ascending=[True, False], kind="mergesort").iloc[0]


def within_target(df: pd.DataFrame, loss_target: float | None) -> pd.Series:
    if loss_target is None:
        return pd.Series(True, index=df.index)
    return df["loss"] <= float(loss_target) + 1e-12


def rank_within_target(df: pd.DataFrame) -> pd.DataFrame:
    """Architectures within the target, most efficient first (ties: lower loss)."""
    ok = df[df["within_target"]]
    return ok.sort_values(["pred_output_tokens_per_s", "loss"], ascending=[False, True], kind="mergesort")


# ---- the GQA walk --------------------------------------------------------------------------
def gqa_walk(steps: Sequence[dict], throughput: Callable[[str], float]) -> dict[str, Any]:
    """Walk GQA upward from the first step; stop at the first measured throughput below it.

    ``steps``: dicts with ``gqa``, ``arch_id`` and ``within_target``, sorted by GQA, the
    first being the base (the paper's GQA = 4). ``throughput(arch_id)`` is called lazily,
    so a live measurement stops early for real. The best step is the fastest one within
    the loss target (the base included); it is ``None`` when none is within the target.
    """
    if not steps:
        raise SearchError("GQA walk: no steps")
    gqas = [s["gqa"] for s in steps]
    if gqas != sorted(gqas) or len(set(gqas)) != len(gqas):
        raise SearchError(f"GQA walk: steps must have increasing GQA, got {gqas}")
    base = steps[0]
    t_base = float(throughput(base["arch_id"]))
    visited = [dict(base, throughput=t_base, status="base")]
    stopped_at = None
    for step in steps[1:]:
        t = float(throughput(step["arch_id"]))
        if t < t_base:
            visited.append(dict(step, throughput=t, status="below base: stop"))
            stopped_at = step["gqa"]
            break
        visited.append(dict(step, throughput=t, status="kept" if step.get("within_target", True) else "above loss target"))
    eligible = [v for v in visited if v["status"] != "below base: stop" and v.get("within_target", True)]
    best = max(eligible, key=lambda v: v["throughput"]) if eligible else None
    return {
        "base_gqa": base["gqa"],
        "base_throughput": t_base,
        "steps": visited,
        "stopped_at_gqa": stopped_at,
        "best": best,
    }


# ---- stage 1: candidates and the measurement plan ------------------------------------------
def loss_target_value(
    target: SearchTarget, law: LawModel, l_opt: float, settings: SearchSettings, runs: pd.DataFrame | None
) -> dict[str, Any]:
    """The numeric loss target, and where it came from."""
    lt = target.loss_target
    if lt is None:
        return {"value": None, "source": "none", "baseline": None}
    if not isinstance(lt, str):
        return {"value": float(lt), "source": "number", "baseline": None}
    base = target.baseline
    predicted = law.predict(base.d_over_sqrt_n, base.mlp_attn_ratio, l_opt)
    observed = None
    if runs is not None and len(runs) and "valid_loss" in runs:
        hit = runs[runs["arch_id"] == base.arch_id]
        if len(hit) and np.isfinite(float(hit["valid_loss"].iloc[0])):
            observed = float(hit["valid_loss"].iloc[0])
    if settings.loss_target_source == "observed":
        if observed is None:
            raise SearchError(
                f"search target '{target.name}': loss_target_source is 'observed' but the runs table has no "
                f"valid_loss for baseline '{base.name}' ({base.arch_id}); train it or use 'predicted'"
            )
        value = observed
    else:
        value = predicted[settings.form]
    return {
        "value": float(value), "source": f"{settings.loss_target_source} loss of baseline", "baseline": base.arch_id,
        "baseline_name": base.name, "baseline_predicted": predicted, "baseline_observed": observed,
    }


def _entry(row: pd.Series | dict, role: str, **extra) -> dict[str, Any]:
    row = dict(row)
    keep = ARCH_COLUMNS + ["name", "kv_cache_bytes_per_token", "loss", "pred_output_tokens_per_s", "within_target"]
    out = {k: _py(row.get(k)) for k in keep if k in row}
    out.update({k: _py(v) for k, v in row.items() if k.startswith("loss_")})
    out["role"] = role
    out.update(extra)
    return out


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _arch_of(entry: dict) -> Architecture:
    return Architecture(
        d_model=int(entry["d_model"]), ffn=int(entry["ffn"]), layers=int(entry["layers"]), heads=int(entry["heads"]),
        kv_heads=int(entry["kv_heads"]), head_dim=int(entry["head_dim"]), vocab=int(entry["vocab"]),
        tied=bool(entry["tied"]), scale=str(entry["scale"]), name=str(entry.get("name") or ""),
    )


def prepare(
    target: SearchTarget,
    settings: SearchSettings,
    law: LawModel,
    efficiency: Efficiency,
    runs: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Steps 1-4: the scored space (one row per architecture) and the measurement plan."""
    xs, rs, grid_source = grid_axes(settings, law.conditional, runs)
    base_gqa = target.walk_base_gqa
    space = enumerate_space(target.scale, xs, rs, base_gqa)
    require_feasible(target, space, xs, rs)

    l_opt = law.l_opt(target.scale.n_target, target.tokens)
    df = score(space.archs.values(), law, l_opt, efficiency, settings.form)
    df["requested_d_over_sqrt_n"] = [space.requested[a][0] for a in df["arch_id"]]
    df["requested_r"] = [space.requested[a][1] for a in df["arch_id"]]
    lt = loss_target_value(target, law, l_opt, settings, runs)
    df["within_target"] = within_target(df, lt["value"])
    df["pareto"] = pareto_mask(df["loss"], df["pred_output_tokens_per_s"])

    panda = pick_panda(df)
    ranked = rank_within_target(df)
    surefire_pred = ranked.iloc[0] if len(ranked) else None

    measure: dict[str, dict] = {}

    def add(entry: dict) -> None:
        aid = entry["arch_id"]
        if aid not in measure:
            measure[aid] = dict(entry, roles=[entry["role"]])
        elif entry["role"] not in measure[aid]["roles"]:
            measure[aid]["roles"].append(entry["role"])

    baseline_entry = None
    if target.baseline is not None:
        b = score([target.baseline], law, l_opt, efficiency, settings.form).iloc[0].to_dict()
        b["within_target"] = bool(lt["value"] is None or b["loss"] <= lt["value"] + 1e-12)
        baseline_entry = _entry(b, "baseline")
        add(baseline_entry)
    panda_entry = _entry(panda, "panda")
    add(panda_entry)

    walks, skipped = [], []
    for rank, (_, cand) in enumerate(ranked.head(settings.measure_top_k).iterrows()):
        steps = []
        for g in target.walk_gqas:
            if g == base_gqa:
                row = cand.to_dict()
            else:
                try:
                    arch = resolve(
                        target.scale,
                        GridPoint(r=float(cand["mlp_attn_ratio"]), gqa=g, d_model=int(cand["d_model"]), origin="gqa walk"),
                    )
                except InfeasiblePoint as exc:
                    skipped.append({"base_arch_id": cand["arch_id"], "gqa": g, "reason": str(exc)})
                    continue
                row = score([arch], law, l_opt, efficiency, settings.form).iloc[0].to_dict()
                row["within_target"] = bool(lt["value"] is None or row["loss"] <= lt["value"] + 1e-12)
            entry = _entry(row, "walk", base_arch_id=cand["arch_id"], walk_rank=rank)
            add(entry)
            steps.append({"gqa": g, "arch_id": entry["arch_id"], "within_target": bool(entry["within_target"])})
        walks.append({"base_arch_id": cand["arch_id"], "rank": rank, "steps": steps})

    candidates = {
        "target": target.to_dict(),
        "settings": settings.to_dict(),
        "l_opt": l_opt,
        "loss_target": lt,
        "grid": {
            "source": grid_source, "d_over_sqrt_n": xs, "r": rs, "gqa": base_gqa, "points": space.points,
            "infeasible": space.infeasible, "infeasible_examples": space.examples, "architectures": len(df),
            "within_target": int(df["within_target"].sum()),
        },
        "panda": panda_entry,
        "surefire_predicted": _entry(surefire_pred, "surefire_predicted") if surefire_pred is not None else None,
        "baseline": baseline_entry,
        "walks": walks,
        "skipped_variants": skipped,
        "measure": list(measure.values()),
    }
    return candidates, df


def measure_ids(candidates: dict) -> list[str]:
    """Architecture ids the workflow must measure for this target (deduplicated, ordered)."""
    return [m["arch_id"] for m in candidates["measure"]]


def measure_entry(candidates: dict, arch_id: str) -> dict:
    for m in candidates["measure"]:
        if m["arch_id"] == arch_id:
            return m
    raise SearchError(f"architecture {arch_id} is not in the search's measurement list ({len(candidates['measure'])} entries)")


def measure_arch(candidates: dict, arch_id: str) -> Architecture:
    return _arch_of(measure_entry(candidates, arch_id))


# ---- stage 2: selection with measured throughput -------------------------------------------
def throughput_at(record: dict, batch_size: int, where: str = "throughput record") -> float:
    """Output tokens/s at ``batch_size`` from a throughput record (docs/pipeline.md)."""
    for rec in record.get("records", []):
        if int(rec.get("batch_size", -1)) == int(batch_size):
            value = rec.get("output_tokens_per_s")
            if value is None or not np.isfinite(float(value)):
                raise SearchError(f"{where}: output_tokens_per_s at batch size {batch_size} is missing or not finite")
            return float(value)
    sizes = [rec.get("batch_size") for rec in record.get("records", [])]
    raise SearchError(f"{where}: no record at batch size {batch_size} (measured: {sizes}); set search.batch_size to one of them")


def select(
    candidates: dict, space: pd.DataFrame, throughput: Callable[[str], float], measured_label: str = "measured"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Step 5: GQA walks with measured throughput; Panda, Surefire, baseline and the Pareto table."""
    cache: dict[str, float] = {}

    def tput(arch_id: str) -> float:
        if arch_id not in cache:
            cache[arch_id] = float(throughput(arch_id))
        return cache[arch_id]

    def with_measured(entry: dict | None) -> dict | None:
        if entry is None:
            return None
        out = dict(entry)
        out["measured_output_tokens_per_s"] = tput(entry["arch_id"])
        return out

    walks = []
    for w in candidates["walks"]:
        if not w["steps"]:
            continue
        walk = gqa_walk(w["steps"], tput)
        walk["base_arch_id"] = w["base_arch_id"]
        walk["rank"] = w["rank"]
        walks.append(walk)

    best = [w["best"] for w in walks if w["best"] is not None]
    surefire = None
    if best:
        top = max(best, key=lambda v: v["throughput"])
        surefire = dict(measure_entry(candidates, top["arch_id"]))
        surefire["role"] = "surefire"
        surefire["measured_output_tokens_per_s"] = top["throughput"]

    panda = with_measured(candidates["panda"])
    baseline = with_measured(candidates.get("baseline"))
    lt = candidates["loss_target"]
    summary = {}
    if baseline is not None:
        for key, pick in (("panda", panda), ("surefire", surefire)):
            if pick is None:
                continue
            summary[key] = {
                "loss_delta_vs_baseline": pick["loss"] - baseline["loss"],
                "measured_speedup_vs_baseline": pick["measured_output_tokens_per_s"] / baseline["measured_output_tokens_per_s"],
                "predicted_speedup_vs_baseline": pick["pred_output_tokens_per_s"] / baseline["pred_output_tokens_per_s"],
            }
    t = candidates["target"]
    result = {
        "target": t["name"],
        "scale": t["scale"]["name"],
        "n_target": t["scale"]["n_target"],
        "tokens": t["tokens"],
        "form": candidates["settings"]["form"],
        "batch_size": candidates["settings"]["batch_size"],
        "input_len": candidates["settings"]["input_len"],
        "output_len": candidates["settings"]["output_len"],
        "throughput_source": measured_label,
        "l_opt": candidates["l_opt"],
        "loss_target": lt,
        "grid": candidates["grid"],
        "panda": panda,
        "surefire": surefire,
        "surefire_predicted": with_measured(candidates.get("surefire_predicted")),
        "baseline": baseline,
        "versus_baseline": summary,
        "gqa_walks": walks,
        "skipped_variants": candidates.get("skipped_variants", []),
        "measured": {a: v for a, v in cache.items()},
        "measured_architectures": [
            dict(m, measured_output_tokens_per_s=cache[m["arch_id"]]) for m in candidates["measure"] if m["arch_id"] in cache
        ],
        "note": None if surefire is not None else (
            f"no architecture meets the loss target {lt['value']:.4g}: Panda's predicted loss is "
            f"{candidates['panda']['loss']:.4g}; relax loss_target or widen the grid"
        ),
    }
    pareto = space.copy()
    pareto["measured_output_tokens_per_s"] = [cache.get(a, np.nan) for a in pareto["arch_id"]]
    pareto["is_panda"] = pareto["arch_id"] == candidates["panda"]["arch_id"]
    pareto["is_surefire"] = pareto["arch_id"] == (surefire["arch_id"] if surefire else None)
    pareto = pareto.sort_values(["loss", "pred_output_tokens_per_s"], ascending=[True, False], kind="mergesort")
    return result, pareto.reset_index(drop=True)


def run_search(
    target: SearchTarget,
    settings: SearchSettings,
    law: LawModel,
    efficiency: Efficiency,
    runs: pd.DataFrame | None = None,
    measure: Callable[[Architecture], float] | None = None,
    measured_label: str = "cost model (predicted)",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Algorithm 1 in one process; ``measure`` defaults to the efficiency prediction."""
    candidates, space = prepare(target, settings, law, efficiency, runs)
    measure = measure or efficiency
    result, pareto = select(candidates, space, lambda a: measure(measure_arch(candidates, a)), measured_label)
    return result, pareto



# ---- file-level entry points of the workflow's rules ---------------------------------------
def prepare_from_files(
    target: dict, settings: dict, runs_path: str, fit_path: str, cost_model_path: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``search_candidates``: the rule's params (target, settings) and its three input files."""
    from .io import read_json

    t, s = SearchTarget.from_dict(target), SearchSettings.from_dict(settings)
    runs = pd.read_parquet(runs_path)
    law = LawModel(read_json(fit_path), runs)
    cost_model = read_json(cost_model_path)
    efficiency = cost_model_efficiency(cost_model, s.input_len, s.output_len, s.batch_size)
    candidates, space = prepare(t, s, law, efficiency, runs)
    candidates["inputs"] = {"runs": str(runs_path), "fit": str(fit_path), "cost_model": str(cost_model_path)}
    candidates["cost_model_spearman"] = cost_model.get("spearman")
    return candidates, space


def measure_candidate(candidates: dict, arch_id: str, workload: dict, hardware: dict) -> dict:
    """``throughput_candidate``: measure one listed architecture with random weights."""
    from .throughput import run_job

    entry = measure_entry(candidates, arch_id)
    record = run_job(_arch_of(entry).to_dict(), dict(workload, weights="random"), hardware, None)
    record["search"] = {"target": candidates["target"]["name"], "roles": entry.get("roles", [entry["role"]])}
    return record


def select_from_files(candidates_path: str, space_path: str, measured_paths: Iterable[str]) -> tuple[dict, pd.DataFrame]:
    """``search_select``: the GQA walks on the measured records, Panda, Surefire, Pareto table."""
    from pathlib import Path

    from .io import read_json

    candidates = read_json(candidates_path)
    space = pd.read_parquet(space_path)
    records = {}
    for p in measured_paths:
        rec = read_json(p)
        aid = rec.get("arch_id") or Path(p).stem
        if Path(p).stem != aid:
            raise SearchError(f"{p}: record is for architecture {aid}, not {Path(p).stem}")
        records[aid] = (p, rec)
    missing = [a for a in measure_ids(candidates) if a not in records]
    if missing:
        raise SearchError(f"{candidates_path}: no throughput record for listed architecture(s) {missing}")
    batch = candidates["settings"]["batch_size"]

    def tput(arch_id: str) -> float:
        path, rec = records[arch_id]
        return throughput_at(rec, batch, path)

    devices = sorted({str(r.get("device")) for _, r in records.values()})
    engines = sorted({str(r.get("engine")) for _, r in records.values()})
    result, pareto = select(candidates, space, tput, measured_label=f"measured ({', '.join(engines)} on {', '.join(devices)})")
    result["measurement"] = {"devices": devices, "engines": engines, "records": len(records)}
    result["cost_model_spearman"] = candidates.get("cost_model_spearman")
    return result, pareto
