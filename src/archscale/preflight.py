"""Everything checked about a study before any job starts, reported in ONE message.

:func:`check_study` collects, each with its key path:

* schema violations and non-finite numbers (:func:`archscale.config.config_problems`);
* ``tokenizer.vocab_size`` below a byte-level BPE's minimum when the BPE is trained here;
* ``training.micro_batch`` not dividing ``training.global_batch``;
* two explicit architectures with one name and different shapes (the search and the
  selectors would silently take one of them);
* a scale with no grid and no explicit architectures, and one whose every point was skipped;
* infeasible grid points (``model.on_infeasible: error``) and every other problem of the plan;
* cross-field rules: ``fit.r_min < fit.r_max``, ``search.form`` among ``fit.forms``, each search
  target's ``base_gqa`` among its ``gqa_candidates`` (and the target resolved), the search's and
  the report's batch size among ``throughput.batch_sizes``, the throughput mode and context;
* magnitudes: integers within int64, seeds within numpy's range, ``compute.peak_flops`` above 0,
  a scale's token budget at least one global batch;
* the data: ``data.mixture`` naming only sources of the corpus, each of them, not all zero (the
  manifest job would otherwise delete the finished manifest before failing), a configured
  ``tokenizer.file`` that exists;
* the evaluation (when enabled): its include paths, local task names, metric keys.

Implausible but runnable values (a peak learning rate of 1e6, a peak FLOP/s that looks like
TFLOP/s) are *warnings*: listed with the notices, never fatal.

Points dropped by ``model.on_infeasible: skip`` are *notices*, not problems: they are listed by
the workflow at start-up and by ``archscale plan``. The Snakemake workflow (common.smk) and the
CLIs call :func:`preflight`; nothing here imports torch or the workflow.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import NON_FINITE, ConfigError, config_problems, format_problems, key_path

if TYPE_CHECKING:  # pragma: no cover
    from .study import Study


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    study: "Study | None" = None
    warnings: list[str] = field(default_factory=list)


INT64_MAX = 2**63 - 1
#: Seeds go to numpy's legacy ``np.random.seed`` (megatron) and ``default_rng``: 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


def _recipe_problems(config: dict) -> list[str]:
    tr = config["training"]
    if tr["global_batch"] % tr["micro_batch"]:
        return [f"key 'training.micro_batch': {tr['micro_batch']} does not divide training.global_batch "
                f"({tr['global_batch']}); gradient accumulation needs a whole number of micro-batches"]
    return []


def _tokenizer_problems(config: dict) -> list[str]:
    from .data.tokenizer import MIN_BPE_VOCAB

    tok = config["tokenizer"]
    if not tok.get("file") and tok["vocab_size"] < MIN_BPE_VOCAB:
        return [f"key 'tokenizer.vocab_size': {tok['vocab_size']} is too small for the byte-level BPE trained "
                f"when tokenizer.file is null (needs at least {MIN_BPE_VOCAB}: 256 bytes + the "
                "end-of-document token)"]
    return []


def _architecture_problems(config: dict) -> list[str]:
    problems, seen = [], {}
    for i, scale in enumerate(config["scales"]):
        if not scale.get("grid") and not scale.get("architectures"):
            problems.append(f"key 'scales[{i}]' (scale '{scale['name']}'): empty: no grid sweeps and no "
                            "architectures; add some or remove the scale")
        for j, ex in enumerate(scale.get("architectures", [])):
            where = f"scales[{i}].architectures[{j}]"
            shape = (scale["name"], ex["d_model"], ex["ffn"], ex["heads"], ex["kv_heads"])
            if ex["name"] in seen and seen[ex["name"]][1] != shape:
                problems.append(f"key '{where}.name': '{ex['name']}' is also the name of {seen[ex['name']][0]} "
                                "with a different shape; give each architecture its own name")
            seen.setdefault(ex["name"], (where, shape))
    return problems


def _ranges_problems(config: dict) -> list[str]:
    """Ordered ranges and settings that must agree with each other."""
    fit, search, tp = config["fit"], config["search"], config["throughput"]
    problems = []
    if fit["r_min"] >= fit["r_max"]:
        problems.append(f"key 'fit.r_min': {fit['r_min']} is not below fit.r_max ({fit['r_max']}); the fit's "
                        "r range must be ordered (r_min < r_max)")
    if not fit["forms"]:
        problems.append("key 'fit.forms': [] fits no law form; list multiplicative and/or additive")
    elif search["form"] not in fit["forms"]:
        problems.append(f"key 'search.form': '{search['form']}' is not among fit.forms {fit['forms']}; the search "
                        f"predicts with a fitted form: add '{search['form']}' to fit.forms or set search.form "
                        f"to one of {fit['forms']}")
    for i, t in enumerate(search["targets"]):
        cands = t["gqa_candidates"]
        if t["base_gqa"] is not None and t["base_gqa"] not in cands:
            problems.append(f"key 'search.targets[{i}].base_gqa' (target '{t['name']}'): {t['base_gqa']} is not "
                            f"among its gqa_candidates {cands}; add it or pick one of them")
        if len(set(cands)) != len(cands):
            problems.append(f"key 'search.targets[{i}].gqa_candidates' (target '{t['name']}'): {cands} lists a "
                            "value more than once")
    measured = tp["batch_sizes"]
    for key, value in (("search.batch_size", search["batch_size"]),
                       ("report.throughput_batch_size", config["report"]["throughput_batch_size"])):
        if value is not None and value not in measured:
            problems.append(f"key '{key}': {value} is not among throughput.batch_sizes {measured} (never "
                            "measured); pick one of them or add it there")
    return problems + _throughput_mode_problems(tp)


def _throughput_mode_problems(tp: dict) -> list[str]:
    from .throughput.measure import check_mode

    try:
        check_mode(tp["mode"], tp["context"], tp["input_len"])
    except ValueError as exc:
        key = str(exc).split()[0].rstrip(":")
        value = tp.get(key.split(".")[-1])
        return [f"key '{key}': {value!r}: {exc}"]
    return []


def _walk(value: Any, path: tuple = ()):
    """(path, value) of every scalar of a config."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,))
    else:
        yield path, value


def _is_seed(path: tuple) -> bool:
    named = [p for p in path if isinstance(p, str)]
    return bool(named) and named[-1] in ("seed", "seeds")


def _magnitude_problems(config: dict) -> list[str]:
    """Integers a job cannot hold (int64), seeds numpy refuses, a zero peak FLOP/s."""
    problems = []
    for path, v in _walk(config):
        if isinstance(v, bool) or not isinstance(v, int):
            continue
        if abs(v) > INT64_MAX:
            problems.append(f"key '{key_path(path)}': {v:.6g} overflows a 64-bit integer (at most {INT64_MAX:.3g})")
        elif _is_seed(path) and not 0 <= v <= SEED_MAX:
            problems.append(f"key '{key_path(path)}': seed {v} is outside 0 .. {SEED_MAX} (numpy's seed range)")
    peak = config["compute"]["peak_flops"]
    if peak is not None and peak <= 0:
        problems.append(f"key 'compute.peak_flops': {peak} must be positive (FLOP/s of one device, e.g. 989e12 "
                        "for an H100 in bf16), or null for the GPU model's peak")
    return problems


def _budget_problems(config: dict) -> list[str]:
    """Each scale's training tokens: a whole number of at least one global batch."""
    from .arch import Scale

    tr = config["training"]
    batch_tokens = tr["global_batch"] * tr["seq_length"]
    problems = []
    for i, entry in enumerate(config["scales"]):
        key = f"scales[{i}].tokens" if entry.get("tokens") is not None else f"scales[{i}].tokens_per_param"
        raw = entry.get("tokens") or entry["tokens_per_param"] * entry["n_target"]
        if not math.isfinite(raw) or raw > INT64_MAX:
            problems.append(f"key '{key}' (scale '{entry['name']}'): a budget of {raw:.3g} tokens overflows a "
                            "64-bit integer")
            continue
        tokens = Scale.from_entry(entry, config).train_tokens
        what = f"{entry[key.split('.')[-1]]} gives {tokens} training tokens"
        if tokens < 1:
            problems.append(f"key '{key}' (scale '{entry['name']}'): {what} (rounds to 0); raise it")
        elif tokens < batch_tokens:
            problems.append(f"key '{key}' (scale '{entry['name']}'): {what}, less than one global batch "
                            f"(training.global_batch x seq_length = {batch_tokens} tokens)")
    return problems


def corpus_sources(config: dict) -> list[str] | None:
    """The sources (folders) of the corpus shards the workflow reads; None when there are none."""
    data = config["data"]
    shards = sorted(Path(data["corpus_dir"]).glob(data["shard_glob"]))
    return sorted({p.parent.name for p in shards}) if shards else None


def _data_problems(config: dict) -> list[str]:
    """The corpus exists, ``data.mixture`` weighs exactly its sources (not all zero), a
    configured tokenizer file exists: checked here, before the data jobs delete their outputs."""
    data, problems = config["data"], []
    sources = corpus_sources(config)
    if sources is None:
        problems.append(f"key 'data.corpus_dir': '{data['corpus_dir']}' has no shards matching data.shard_glob "
                        f"'{data['shard_glob']}'; point it at a Dolma-format corpus (<source>/*.json.gz)")
    mixture = data["mixture"]
    if isinstance(mixture, dict):
        problems += _mixture_problems(mixture, sources)
    tok_file = config["tokenizer"]["file"]
    if tok_file and not Path(tok_file).is_file():
        problems.append(f"key 'tokenizer.file': '{tok_file}' does not exist (a Hugging Face tokenizer.json; "
                        "null trains a byte-level BPE)")
    return problems


def _mixture_problems(mixture: dict, sources: list[str] | None) -> list[str]:
    problems = []
    if not mixture:
        return ["key 'data.mixture': {} weighs no source; use 'proportional' or give each source a weight"]
    if sources is not None:
        for name in sorted(set(mixture) - set(sources)):
            close = difflib.get_close_matches(str(name), sources, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"key 'data.mixture.{name}': '{name}' is not a source of the corpus{hint}; its "
                            f"sources: {sources}")
        missing = sorted(set(sources) - set(mixture))
        if missing:
            problems.append(f"key 'data.mixture': no weight for sources {missing}; give every source a weight "
                            "(0 leaves a source out)")
    if all(w == 0 for w in mixture.values()):
        problems.append(f"key 'data.mixture': every weight is 0 ({dict(mixture)}); give at least one source a "
                        "positive weight")
    return problems


def _evaluate_problems(config: dict) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the evaluation stage when it is enabled: include paths that
    exist, task names (a near miss of a local or paper task is an error; another name is left
    to lm-evaluation-harness's registry at run time, with a warning), metrics of listed tasks."""
    from .eval_tasks import PAPER_TASKS, EvaluationError, find_local_tasks

    ev = config["evaluate"]
    if not ev["enabled"]:
        return [], []
    try:
        local = find_local_tasks(ev["include_path"])
    except EvaluationError as exc:
        return [f"key 'evaluate.include_path': {exc}"], []
    known = sorted(set(local) | set(PAPER_TASKS))
    problems, warnings = [], []
    for i, name in enumerate(ev["tasks"]):
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            problems.append(f"key 'evaluate.tasks[{i}]': '{name}' is not a known task (did you mean '{close[0]}'?); "
                            f"local tasks under {ev['include_path']}: {sorted(local)}")
        else:
            warnings.append(f"key 'evaluate.tasks[{i}]': '{name}' is neither a local task under "
                            f"{ev['include_path']} nor one of the paper's; lm-evaluation-harness's registry is "
                            "checked when the evaluation job starts")
    for task in sorted(set(ev["metrics"]) - set(ev["tasks"])):
        problems.append(f"key 'evaluate.metrics.{task}': '{task}' is not one of evaluate.tasks {ev['tasks']}")
    return problems, warnings


#: (key, upper bound, why): values above the bound run but are almost certainly a slip.
PLAUSIBLE_MAX = (
    ("training.lr", 0.1, "AdamW peak learning rates of language models are about 1e-4 to 1e-2; training "
                         "will likely diverge"),
    ("training.init_std", 1.0, "initialisation standard deviations are about 0.02"),
    ("training.weight_decay", 1.0, "AdamW weight decay is about 0.1"),
    ("training.seq_length", 2**17, "longer than any model of the study needs"),
)


def _plausibility_warnings(config: dict) -> list[str]:
    warnings = []
    for key, bound, why in PLAUSIBLE_MAX:
        section, name = key.split(".")
        v = config[section][name]
        if v > bound:
            warnings.append(f"key '{key}': {v:g} is implausible (above {bound:g}): {why}")
    peak = config["compute"]["peak_flops"]
    if peak is not None and 0 < peak < 1e9:
        warnings.append(f"key 'compute.peak_flops': {peak:g} FLOP/s is implausibly low: the key is in FLOP/s "
                        f"(did you mean {peak:g}e12, i.e. TFLOP/s?)")
    for i, entry in enumerate(config["scales"]):
        tpp = entry["tokens_per_param"]
        if entry.get("tokens") is None and not 1 <= tpp <= 10_000:
            warnings.append(f"key 'scales[{i}].tokens_per_param' (scale '{entry['name']}'): {tpp:g} tokens per "
                            "parameter is implausible (the paper uses 20 to 100)")
    return warnings


def _search_problems(study: "Study") -> list[str]:
    """The search targets resolved against the plan (scale names, baselines)."""
    from .search.targets import SearchError

    try:
        study.search_targets
    except (SearchError, ConfigError, KeyError, ValueError) as exc:
        return [str(exc).strip()]
    return []


def _plan_problems(study: "Study") -> tuple[list[str], list[str]]:
    """The plan's problems and its skipped points (notices)."""
    try:
        plan = study.plan
    except ConfigError as exc:
        lines = str(exc).splitlines()
        body = [ln.strip() for ln in lines[1:] if ln.strip()]
        if not body:
            return lines[:1], []
        kind = "infeasible: " if "infeasible" in lines[0] else ""
        return [kind + ln for ln in body], []
    notices = [f"skipped (model.on_infeasible: skip): {reason}" for reason in plan.skipped]
    problems = []
    planned = {run.scale.name for run in plan.runs.values()}
    for i, entry in enumerate(study.config["scales"]):
        if (entry.get("grid") or entry.get("architectures")) and entry["name"] not in planned:
            problems.append(f"key 'scales[{i}]' (scale '{entry['name']}'): every grid point was skipped as "
                            "infeasible; the scale would have no runs")
    return problems, notices


def check_study(config: dict, source: str = "config") -> Preflight:
    """Every problem of ``config`` (defaults filled in place), the plan's notices and, when there is
    no problem, the :class:`~archscale.study.Study`."""
    from .study import Study

    problems = config_problems(config, source)
    if any(NON_FINITE not in p for p in problems):  # the checks below need a schema-valid config
        return Preflight(problems=problems)
    problems += _recipe_problems(config) + _tokenizer_problems(config) + _architecture_problems(config)
    if any(NON_FINITE in p for p in problems):  # the checks below and the plan need finite numbers
        return Preflight(problems=problems)
    eval_problems, warnings = _evaluate_problems(config)
    problems += (_ranges_problems(config) + _magnitude_problems(config) + _budget_problems(config)
                 + _data_problems(config) + eval_problems)
    warnings = _plausibility_warnings(config) + warnings
    if any("overflows" in p for p in problems):  # the plan's arithmetic needs int64
        return Preflight(problems=problems, warnings=warnings)
    study = Study.from_config(config, source=source)
    plan_problems, notices = _plan_problems(study)
    problems += plan_problems
    if not plan_problems:
        problems += _search_problems(study)
    return Preflight(problems=problems, notices=notices, warnings=warnings, study=None if problems else study)


def preflight(config: dict, source: str = "config", notify=None) -> "Study":
    """The validated :class:`Study` with its plan built; :class:`ConfigError` listing every problem.
    ``notify(line)`` receives each warning (``warning: ...``) and notice (skipped points)."""
    result = check_study(config, source)
    if result.problems:
        raise ConfigError(format_problems(result.problems, f"{source}: configuration cannot run"))
    for line in [f"warning: {w}" for w in result.warnings] + result.notices:
        (notify or print)(line)
    return result.study


# ---- command-line flags ----------------------------------------------------------------------
#: Lowest allowed value of a numeric command-line flag, by its argparse dest (every sub-command
#: uses one meaning per name), and whether the bound itself is excluded. The config schema's
#: bounds of the same settings (fit.bootstrap >= 0, model.n_tolerance > 0, ...).
CLI_LOWER_BOUNDS: dict[str, tuple[float, bool]] = {
    **{k: (1, False) for k in ("threads", "tokens", "repeats", "output_len", "top_k", "n_target", "layers",
                                "head_dim", "vocab", "batch_size", "d_multiple", "ffn_multiple", "base_gqa",
                                "gqa", "d_model", "ffn", "heads", "kv_heads", "context", "gqa_range")},
    **{k: (0, False) for k in ("bootstrap", "drop_highest", "warmup", "input_len", "rows", "suggest", "seed",
                                "seed_noise")},
    **{k: (2, False) for k in ("grid_points", "simulations")},
    **{k: (0, True) for k in ("n_tolerance", "r_tolerance", "r_min", "r_max", "delta", "l_opt", "rope_base",
                               "d_over_sqrt_n", "r", "x_range")},
}
#: Pairs of flags that must be ordered (dest of the lower, dest of the upper).
CLI_ORDERED = (("r_min", "r_max"),)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flag_value_problem(dest: str, value: Any) -> str | None:
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return f"{_flag(dest)} {shown}: not a finite number"
    if dest in CLI_LOWER_BOUNDS:
        low, exclusive = CLI_LOWER_BOUNDS[dest]
        if any(v < low or (exclusive and v == low) for v in values):
            return f"{_flag(dest)} {shown}: must be {'above' if exclusive else 'at least'} {low:g}"
    if dest == "seed" and any(v > SEED_MAX for v in values):
        return f"{_flag(dest)} {shown}: a seed is at most {SEED_MAX} (numpy's seed range)"
    if any(isinstance(v, int) and abs(v) > INT64_MAX for v in values):
        return f"{_flag(dest)} {shown}: overflows a 64-bit integer"
    if dest.endswith("_range") and len(values) == 2 and values[0] > values[1]:
        return f"{_flag(dest)} {shown}: LO must not exceed HI"
    return None


def cli_problems(args: Any) -> list[str]:
    """Every out-of-range numeric flag of a parsed ``archscale`` command line (argparse
    namespace), each as one line naming the flag and its value: the CLI's counterpart of
    :func:`check_study`, run before the command so that none ends in a traceback."""
    given = vars(args)
    problems = [p for dest, v in given.items() if (p := _flag_value_problem(dest, v))]
    for lo, hi in CLI_ORDERED:
        a, b = given.get(lo), given.get(hi)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not problems and a >= b:
            problems.append(f"{_flag(lo)} {a:g}: must be below {_flag(hi)} ({b:g})")
    return problems
