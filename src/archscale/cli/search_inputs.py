"""What ``archscale search`` and its lifetime mode read: the runs table, a target rebuilt from
its rows (``--scale``/``--loss-target``), and the search settings (config, then flags)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..arch import Architecture, Scale
from ..config import load_config, schema_default
from ..io import read_json
from ..search import SearchError, SearchSettings, SearchTarget
from ..study import Study


def _read_runs(path: Path) -> pd.DataFrame:
    try:
        runs = pd.read_parquet(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: runs table is missing") from None
    need = {"arch_id", "scale", "d_over_sqrt_n", "mlp_attn_ratio"}
    missing = need - set(runs.columns)
    if missing:
        raise SearchError(f"{path}: runs table lacks column(s) {sorted(missing)}")
    return runs


def _only(values: pd.Series, key: str, scale: str, path: Path):
    uniq = values.dropna().unique()
    if len(uniq) != 1:
        raise SearchError(f"{path}: runs of scale '{scale}' have {len(uniq)} distinct '{key}' values {list(uniq)[:5]}; pass it explicitly")
    return uniq[0].item() if hasattr(uniq[0], "item") else uniq[0]


def target_from_runs(args: argparse.Namespace, runs: pd.DataFrame) -> SearchTarget:
    rows = runs[runs["scale"] == args.scale]
    if rows.empty:
        raise SearchError(f"{args.runs}: no run of scale '{args.scale}' (scales: {sorted(runs['scale'].unique())})")
    for col in ("n_target", "layers", "head_dim", "vocab"):
        if col not in rows:
            raise SearchError(f"{args.runs}: runs table lacks column '{col}' needed to rebuild scale '{args.scale}'")
    tied = bool(_only(rows["tied"], "tied", args.scale, args.runs)) if "tied" in rows else True
    scale = Scale(
        name=args.scale, n_target=int(_only(rows["n_target"], "n_target", args.scale, args.runs)),
        layers=int(_only(rows["layers"], "layers", args.scale, args.runs)),
        head_dim=int(_only(rows["head_dim"], "head_dim", args.scale, args.runs)),
        vocab=int(_only(rows["vocab"], "vocab", args.scale, args.runs)), tied=tied,
        d_multiple=args.d_multiple, ffn_multiple=args.ffn_multiple,
        n_tolerance=args.n_tolerance, r_tolerance=args.r_tolerance,
    )
    if args.tokens:
        tokens = int(args.tokens)
    elif "tokens" in rows:
        tokens = int(_only(rows["tokens"], "tokens", args.scale, args.runs))
    else:
        raise SearchError(f"{args.runs}: no 'tokens' column; pass --tokens")
    baseline, loss_target = None, None
    if args.loss_target is not None:
        try:
            loss_target = float(args.loss_target)
        except ValueError:
            named = rows[rows.get("name", pd.Series(dtype=str)) == args.loss_target] if "name" in rows else rows.iloc[0:0]
            if named.empty:
                raise SearchError(
                    f"--loss-target '{args.loss_target}' is neither a number nor the 'name' of a run of scale "
                    f"'{args.scale}' in {args.runs}"
                ) from None
            b = named.iloc[0]
            baseline = Architecture(
                d_model=int(b["d_model"]), ffn=int(b["ffn"]), layers=int(b["layers"]), heads=int(b["heads"]),
                kv_heads=int(b["kv_heads"]), head_dim=int(b["head_dim"]), vocab=int(b["vocab"]), tied=tied,
                scale=args.scale, name=args.loss_target,
            )
            loss_target = args.loss_target
    return SearchTarget(
        name=args.scale, scale=scale, tokens=tokens, loss_target=loss_target,
        gqa_candidates=tuple(args.gqa or schema_default("search.targets[].gqa_candidates")), base_gqa=args.base_gqa, baseline=baseline,
    )


def _settings(args: argparse.Namespace, config: dict | None) -> SearchSettings:
    base = (Study.from_config(config).search_settings if config else SearchSettings()).to_dict()  # defaults: the schema's
    flags = {
        "form": args.form, "d_over_sqrt_n": args.d_over_sqrt_n, "r": args.r, "grid_points": args.grid_points,
        "measure_top_k": args.top_k, "loss_target_source": args.loss_target_source, "input_len": args.input_len,
        "output_len": args.output_len, "batch_size": args.batch_size,
    }
    base.update({k: v for k, v in flags.items() if v is not None})
    return SearchSettings.from_dict(base)


def read_inputs(args: argparse.Namespace, error: type[Exception]) -> tuple[dict | None, pd.DataFrame, dict]:
    """(config or None, runs table, fit) of a search from runs: --runs, --fit and --cost-model
    all given, else ``error`` naming the missing flags."""
    missing = [f for f, v in (("--runs", args.runs), ("--fit", args.fit), ("--cost-model", args.cost_model)) if v is None]
    if missing:
        raise error(f"give {', '.join(missing)} (or --law LAW to search from a law without runs)")
    config = load_config(args.config) if args.config else None
    return config, _read_runs(args.runs), read_json(args.fit)
