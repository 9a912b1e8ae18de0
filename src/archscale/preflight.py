"""Everything checked about a study before any job starts, reported in ONE message.

:func:`check_study` collects, each with its key path:

* schema violations and non-finite numbers (:func:`archscale.config.config_problems`);
* ``tokenizer.vocab_size`` below a byte-level BPE's minimum when the BPE is trained here;
* ``training.micro_batch`` not dividing ``training.global_batch``;
* two explicit architectures with one name and different shapes (the search and the
  selectors would silently take one of them);
* a scale with no grid and no explicit architectures, and one whose every point was skipped;
* infeasible grid points (``model.on_infeasible: error``) and every other problem of the plan.

Points dropped by ``model.on_infeasible: skip`` are *notices*, not problems: they are listed by
the workflow at start-up and by ``archscale plan``. The Snakemake workflow (common.smk) and the
CLIs call :func:`preflight`; nothing here imports torch or the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import NON_FINITE, ConfigError, config_problems, format_problems

if TYPE_CHECKING:  # pragma: no cover
    from .study import Study


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    study: "Study | None" = None


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
    if any(NON_FINITE in p for p in problems):  # the plan needs finite numbers
        return Preflight(problems=problems)
    study = Study.from_config(config, source=source)
    plan_problems, notices = _plan_problems(study)
    problems += plan_problems
    return Preflight(problems=problems, notices=notices, study=None if problems else study)


def preflight(config: dict, source: str = "config", notify=None) -> "Study":
    """The validated :class:`Study` with its plan built; :class:`ConfigError` listing every problem.
    ``notify(line)`` receives each notice (skipped points)."""
    result = check_study(config, source)
    if result.problems:
        raise ConfigError(format_problems(result.problems, f"{source}: configuration cannot run"))
    for line in result.notices:
        (notify or print)(line)
    return result.study
