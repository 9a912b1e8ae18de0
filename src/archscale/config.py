"""Loading and validating the study config (schema in ``schemas/config.schema.yaml``).

The same schema validates the config inside Snakemake (``snakemake.utils.validate``) and
from the command line (:func:`load_config`); both fill in the schema's defaults.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what to change."""


def schema_path() -> Path:
    return Path(str(resources.files("archscale") / "schemas" / "config.schema.yaml"))


def load_schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


@functools.lru_cache(maxsize=1)
def cached_schema() -> dict:
    """The schema, read once per process (treat as read-only)."""
    return load_schema()


def schema_default(key: str) -> Any:
    """The schema's default of a dotted key (``search.grid_points``; ``search.targets[].base_gqa``
    for a key of an array's items): the one place defaults live."""
    node: dict = cached_schema()
    for part in key.split("."):
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        else:
            node = node["properties"][part]
    if "default" not in node:
        raise KeyError(f"schema: '{key}' has no default")
    return copy.deepcopy(node["default"])


def section_defaults(section: str) -> dict[str, Any]:
    """Every default of a top-level section's keys (``fit``: the fit settings a library caller
    gets when it passes none), read from the schema."""
    props = cached_schema()["properties"][section]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def _with_defaults(validator_cls):
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


@functools.lru_cache(maxsize=1)
def _validator():
    """The validator of the cached schema (it copies defaults into a config, never the reverse)."""
    return _Validator(cached_schema())


def _key_path(error: jsonschema.ValidationError) -> str:
    return key_path(error.absolute_path)


def key_path(parts) -> str:
    """``("scales", 0, "grid")`` -> ``scales[0].grid`` (``<top level>`` when empty)."""
    out = []
    for p in parts:
        out.append(f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p)))
    return "".join(out) or "<top level>"


def _says_number(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "number" in types or "integer" in types:
        return True
    return any(_says_number(s) for key in ("oneOf", "anyOf", "allOf") for s in schema.get(key, []))


def _subschemas(schema: Any) -> list[dict]:
    """``schema`` and the branches of its oneOf/anyOf/allOf (each may describe the value)."""
    if not isinstance(schema, dict):
        return []
    out = [schema]
    for key in ("oneOf", "anyOf", "allOf"):
        for s in schema.get(key, []):
            out.extend(_subschemas(s))
    return out


def _child_schema(schema: Any, key: Any) -> dict:
    """The schema of ``instance[key]`` under ``schema`` (an object's property, an array's items)."""
    for s in _subschemas(schema):
        if isinstance(key, int) and isinstance(s.get("items"), dict):
            return s["items"]
        if isinstance(key, str):
            if key in s.get("properties", {}):
                return s["properties"][key]
            if isinstance(s.get("additionalProperties"), dict):
                return s["additionalProperties"]
    return {}


NON_FINITE = "is not a finite number"


def non_finite_numbers(config: Any, schema: dict | None = None, path: tuple = ()) -> list[str]:
    """Key paths (``training.lr``) of NaN or infinite values where the schema says a number.

    JSON schema's bounds let NaN through (``NaN <= 0`` is false), so this walks the config and
    the schema together; a non-finite float under a key the schema does not type as a number
    is reported too (no key of the study can hold one)."""
    schema = cached_schema() if schema is None and not path else (schema or {})
    problems = []
    if isinstance(config, dict):
        for k, v in config.items():
            problems += non_finite_numbers(v, _child_schema(schema, str(k)), path + (k,))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            problems += non_finite_numbers(v, _child_schema(schema, i), path + (i,))
    elif isinstance(config, float) and not math.isfinite(config):
        what = "a number" if _says_number(schema) else "a value"
        problems.append(f"key '{key_path(path)}': {config!r} {NON_FINITE} ({what} is required: "
                        "NaN and infinity are not allowed)")
    return problems


_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _schema_types(schema: Any) -> set[str]:
    """Every JSON type ``schema`` (or one of its oneOf/anyOf/allOf branches) allows."""
    types: set[str] = set()
    for s in _subschemas(schema):
        t = s.get("type", [])
        types.update([t] if isinstance(t, str) else t)
    return types


def _number_default(schema: Any) -> Any:
    for s in _subschemas(schema):
        d = s.get("default")
        if isinstance(d, (int, float)) and not isinstance(d, bool):
            return d
    return None


def canonical_scalar(value: Any, schema: Any) -> Any:
    """The one spelling of a number under ``schema``, so that equivalent configs give identical
    job params (Snakemake compares params by ``repr``: ``32.0`` is not ``32``):

    * an integer key: an integral float becomes an int (``32.0`` -> ``32``);
    * a number key whose schema default is an int takes an int when integral (``rope_base:
      500000.0`` -> ``500000``); any other number key is a float (``clip_grad: 1`` -> ``1.0``,
      ``r: [1, 2]`` -> ``[1.0, 2.0]``, a mixture weight ``1`` -> ``1.0``);
    * a number written as text where no string is allowed (PyYAML reads ``3e-3`` as a string:
      YAML 1.1 wants ``3.0e-3``) becomes that number.

    Schema defaults are canonical already, so a config that spells every value like its default
    keeps every existing param. Anything else (non-integral floats under integer keys, NaN,
    bools) is left for the schema and the finiteness check to report."""
    types = _schema_types(schema)
    if not types & {"number", "integer"} or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if "string" in types or not _NUMBER_TEXT.match(value.strip()):
            return value
        value = float(value.strip())
        if "number" not in types and not value.is_integer():
            return value
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return value
    if "number" not in types:  # integer only
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(_number_default(schema), int):
        return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 else value
    return float(value) if isinstance(value, int) and abs(value) < 2**53 else value


def canonicalise(config: Any, schema: Any = None, path: tuple = ()) -> Any:
    """Rewrite every number of ``config`` in place to its canonical spelling
    (:func:`canonical_scalar`) and return it. The workflow calls it (through
    :func:`config_problems`) on Snakemake's own ``config``, so every rule sees canonical values."""
    schema = cached_schema() if schema is None and not path else (schema or {})
    if isinstance(config, dict):
        for k in list(config):
            sub = _child_schema(schema, str(k))
            config[k] = canonicalise(config[k], sub, path + (k,))
        return config
    if isinstance(config, list):
        for i in range(len(config)):
            config[i] = canonicalise(config[i], _child_schema(schema, i), path + (i,))
        return config
    return canonical_scalar(config, schema)


def config_problems(config: dict, source: str = "config") -> list[str]:
    """Every schema violation and non-finite number of ``config`` (defaults filled in place),
    each as one line naming ``source`` and the key path; [] when valid. Numbers are made
    canonical in place first (:func:`canonicalise`)."""
    canonicalise(config)
    errors = sorted(_validator().iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines = [f"{source}: key '{_key_path(e)}': {e.message}" for e in errors]
    seen = {f"key '{_key_path(e)}'" for e in errors}
    for problem in non_finite_numbers(config, cached_schema()):
        if problem.split(":")[0] not in seen:
            lines.append(f"{source}: {problem}")
    return lines


def format_problems(problems: list[str], what: str = "invalid configuration") -> str:
    """One message listing every problem (the CLI and the workflow print it before any job)."""
    return f"{what} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n  " + "\n  ".join(problems)


def validate_config(config: dict, source: str = "config") -> dict:
    """Fill defaults in place and validate; raise :class:`ConfigError` listing every problem
    (schema violations and non-finite numbers), each with its key path."""
    problems = config_problems(config, source)
    if problems:
        raise ConfigError(format_problems(problems))
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so a duplicated ``lr:`` would override the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key '{key}' (first at line {first.line + 1}, column {first.column + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return ConfigError(f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else ""))


def read_yaml(path: str | Path) -> dict:
    """A config file as a dict; a syntax error or a duplicated key names the file, line and
    column; an empty file (or one of comments only) is an error, not an empty study."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read as text ({exc.__class__.__name__})") from None
    try:
        config = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if config is None:
        raise ConfigError(f"config file {path} is empty (no keys); give at least one key, e.g. 'scales:'")
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping, not a {type(config).__name__}")
    return config


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """One config file (plus ``overrides`` merged on top), validated with defaults filled."""
    config = read_yaml(path)
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, source=str(path))


#: The workflow's own config file (``configfile:`` in the Snakefile), relative to its directory.
WORKFLOW_CONFIG = Path("config") / "config.yaml"


def layered_files(files: list[str | Path], base: str | Path | None = WORKFLOW_CONFIG) -> list[Path]:
    """The files a run reads, in order: the workflow's ``base`` (when it exists) and then
    ``files`` as ``--configfile`` (a file given twice is read once, at its first place)."""
    out: list[Path] = []
    if base is not None and Path(base).is_file():
        out.append(Path(base))
    for f in files:
        if not any(Path(f).resolve() == o.resolve() for o in out):
            out.append(Path(f))
    return out


def load_layered(files: list[str | Path], base: str | Path | None = WORKFLOW_CONFIG) -> dict:
    """The config exactly as the workflow sees it: ``snakemake --configfile F1 F2 ...`` reads the
    Snakefile's ``config/config.yaml`` (``base``; None = no base) and merges each file on top
    (mappings merged key by key, lists and values replaced), then validates once."""
    paths = layered_files(files, base)
    return validate_config(layered_raw(files, base), source=" + ".join(map(str, paths)))


def layered_raw(files: list[str | Path], base: str | Path | None = WORKFLOW_CONFIG) -> dict:
    """The config as ``snakemake --configfile files`` merges it, as written (not validated, so
    without schema defaults): what an overlay's ``scales`` must repeat."""
    paths = layered_files(files, base)
    if not paths:
        raise ConfigError(f"no config file: {base} does not exist and no file was given")
    config: dict = {}
    for path in paths:
        config = deep_merge(config, read_yaml(path))
    return config


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
