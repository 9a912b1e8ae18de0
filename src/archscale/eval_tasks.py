"""lm-evaluation-harness tasks of the evaluate stage: local YAML tasks under ``include_path``
directories (data files resolved against the YAML, the config handed over inline, no network)
and the names of lm-evaluation-harness's own registry.

:mod:`archscale.evaluate` runs the harness on what :func:`resolve_tasks` returns; the workflow
lists :func:`local_task_files` as inputs of the evaluate rule, so an edited task re-runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

#: The paper's nine zero-shot tasks (lm-evaluation-harness names).
PAPER_TASKS = (
    "arc_easy", "arc_challenge", "lambada_openai", "hellaswag", "openbookqa", "piqa", "sciq",
    "winogrande", "coqa",
)


class EvaluationError(ValueError):
    """A task, metric or selection that cannot be evaluated (names the config key)."""


class _TolerantLoader:
    """A YAML SafeLoader that reads ``!function`` (and any other tag) as a plain string."""

    @staticmethod
    def make():
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def any_tag(loader, suffix, node):
            if isinstance(node, yaml.ScalarNode):
                return {"__tag__": suffix, "value": loader.construct_scalar(node)}
            return None

        Loader.add_multi_constructor("!", any_tag)
        return Loader


def _has_tags(obj) -> bool:
    if isinstance(obj, dict):
        return "__tag__" in obj or any(_has_tags(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_tags(v) for v in obj)
    return False


def find_local_tasks(include_paths: Iterable[str | Path]) -> dict[str, Path]:
    """Task name -> YAML path of every task defined under the include paths."""
    import yaml

    loader = _TolerantLoader.make()
    found: dict[str, Path] = {}
    for root in include_paths:
        root = Path(root)
        if not root.is_dir():
            raise EvaluationError(f"evaluate.include_path: '{root}' is not a directory")
        for path in sorted(root.rglob("*.yaml")):
            try:
                cfg = yaml.load(path.read_text(), Loader=loader)
            except yaml.YAMLError as exc:
                raise EvaluationError(f"{path}: not valid YAML ({exc})") from None
            if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
                found.setdefault(cfg["task"], path)
    return found


def _resolve_files(files, base: Path):
    if isinstance(files, str):
        p = Path(files)
        if "://" in files or p.is_absolute():
            return files
        resolved = base / p
        if not resolved.exists():
            raise EvaluationError(f"{base}: data file '{files}' does not exist (looked for {resolved})")
        return str(resolved.resolve())
    if isinstance(files, list):
        return [_resolve_files(f, base) for f in files]
    if isinstance(files, dict):
        return {k: _resolve_files(v, base) for k, v in files.items()}
    return files


def local_task_config(yaml_path: str | Path) -> dict | None:
    """The inline config of a local task with absolute data files, or None when the YAML needs
    lm-evaluation-harness's own loader (``!function``, ``include``): it is then loaded by name."""
    import yaml

    yaml_path = Path(yaml_path)
    cfg = yaml.load(yaml_path.read_text(), Loader=_TolerantLoader.make())
    if _has_tags(cfg) or "include" in cfg:
        return None
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = _resolve_files(kwargs["data_files"], yaml_path.parent)
        cfg["dataset_kwargs"] = kwargs
    return cfg


def local_task_files(tasks: Iterable[str], include_paths: Iterable[str | Path]) -> list[str]:
    """YAML and data files of the local tasks among ``tasks`` (inputs of the evaluate rule, so an
    edited task re-runs its evaluations). Paths keep the include path's form (relative stays relative)."""
    local = find_local_tasks(include_paths)
    files: list[str] = []

    def collect(x, base: Path):
        if isinstance(x, str):
            if "://" not in x:
                files.append(str(base / x) if not Path(x).is_absolute() else x)
        elif isinstance(x, list):
            for v in x:
                collect(v, base)
        elif isinstance(x, dict):
            for v in x.values():
                collect(v, base)

    import yaml

    for name in tasks:
        if name not in local:
            continue
        path = local[name]
        files.append(str(path))
        cfg = yaml.load(path.read_text(), Loader=_TolerantLoader.make())
        collect((cfg.get("dataset_kwargs") or {}).get("data_files"), path.parent)
    return sorted(set(files))


def resolve_tasks(tasks: list[str], include_paths: Iterable[str | Path], registry: Iterable[str] | None = None):
    """lm-evaluation-harness task specs for ``tasks``: an inline dict for a local task, the name
    for a registered one. Returns ``(specs, local_names)``.

    With ``registry`` (e.g. :func:`task_registry`), a name that is neither local nor registered
    is an error here; without it the check is left to :func:`run_lm_eval` (indexing
    lm-evaluation-harness's 14,000 task files takes about a minute: it is done once per job).
    """
    if not tasks:
        raise EvaluationError("evaluate.tasks is empty: name at least one lm-evaluation-harness task")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise EvaluationError(f"evaluate.tasks lists {dupes} more than once")
    local = find_local_tasks(include_paths)
    registered = set(registry) if registry is not None else None
    specs: list[str | dict] = []
    for name in tasks:
        if name in local:
            cfg = local_task_config(local[name])
            specs.append(cfg if cfg is not None else name)
            continue
        if registered is not None and name not in registered:
            raise EvaluationError(unknown_task_message(name, include_paths))
        specs.append(name)
    return specs, [t for t in tasks if t in local]


def unknown_task_message(name: str, include_paths: Iterable[str | Path]) -> str:
    return (
        f"evaluate.tasks: '{name}' is neither a local task under {[str(p) for p in include_paths]} nor "
        f"an lm-evaluation-harness task (e.g. {', '.join(PAPER_TASKS[:4])}, ...)"
    )


def task_registry(include_paths: Iterable[str | Path] = ()) -> list[str]:
    """Every task, group and tag name lm-evaluation-harness knows (no dataset is downloaded)."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_paths] or None
    return TaskManager(include_path=paths).all_tasks
