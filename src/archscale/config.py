"""Loading and validating the study config (schema in ``schemas/config.schema.yaml``).

The same schema validates the config inside Snakemake (``snakemake.utils.validate``) and
from the command line (:func:`load_config`); both fill in the schema's defaults.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
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


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "<top level>"


def validate_config(config: dict, source: str = "config") -> dict:
    """Fill defaults in place and validate; raise :class:`ConfigError` naming the key."""
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: key '{_key_path(e)}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return config


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, source=str(path))


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
