"""One reader per record type: a training record and a throughput record.

* :class:`TrainingRecord` - ``results/train/{arch}/metrics.json`` (written by the training job);
* :class:`ThroughputRecord` - ``results/throughput/{arch}.json`` and the search's live
  measurements (written by :func:`archscale.throughput.run_job`); :meth:`ThroughputRecord.at`
  gives the per-batch figures.

Every reader validates what it returns: a record that is missing, unreadable, lacks a key or has
a wrong type raises :class:`RecordError` naming the file (or the ``where`` label of an in-memory
record) and the key. The record formats are described in docs/pipeline.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import pyarrow as pa

from .io import read_json


class RecordError(ValueError):
    """A per-run record that is missing or malformed; the message names the file and key."""


#: Per-batch figures of a throughput record: (key, type, nullable). Required ones are finite numbers.
#: The rates are the medians of the timed repeats where the record has them (``median``), with
#: the 95% interval of output tokens/s (``_low``/``_high``, null when withheld); older records
#: without medians give their means and no interval. ``total_tokens_per_s`` is undefined and
#: ``prefill_latency_s`` may be unmeasured at ``decode_at_context``.
MEDIAN_FIELDS = ("output_tokens_per_s", "total_tokens_per_s", "decode_tokens_per_s", "prefill_latency_s", "decode_s")
THROUGHPUT_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("output_tokens_per_s", pa.float64(), False),
    ("output_tokens_per_s_low", pa.float64(), True),
    ("output_tokens_per_s_high", pa.float64(), True),
    ("total_tokens_per_s", pa.float64(), True),
    ("decode_tokens_per_s", pa.float64(), True),
    ("prefill_latency_s", pa.float64(), True),
    ("cv_output_tokens_per_s", pa.float64(), True),
    ("peak_memory_bytes", pa.int64(), True),
    ("energy_j", pa.float64(), True),
    ("energy_j_per_output_token", pa.float64(), True),
    ("power_mean_w", pa.float64(), True),
    ("power_peak_w", pa.float64(), True),
]


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


_KINDS = {
    "int": (lambda v: _is_number(v) and (not isinstance(v, float) or v.is_integer()), int, "an integer"),
    "float": (_is_number, float, "a number"),
    "finite": (lambda v: _is_number(v) and math.isfinite(float(v)), float, "a finite number"),
    "str": (lambda v: isinstance(v, str), str, "a string"),
    "bool": (lambda v: isinstance(v, bool), bool, "true or false"),
}


def get_field(rec: dict, key: str, where: str, kind: str, nullable: bool = False):
    """``rec[key]`` checked to be of ``kind`` (int, float, finite, str, bool, dict, list)."""
    if key not in rec or rec[key] is None:
        if nullable:
            return None
        raise RecordError(f"{where}: required key '{key}' is missing" if key not in rec else f"{where}: key '{key}' is null")
    v = rec[key]
    if kind in ("dict", "list"):
        typ = dict if kind == "dict" else list
        if not isinstance(v, typ):
            raise RecordError(f"{where}: key '{key}' must be a {'mapping' if kind == 'dict' else 'list'}, got {type(v).__name__}")
        return v
    check, convert, what = _KINDS[kind]
    if not check(v):
        raise RecordError(f"{where}: key '{key}' must be {what}, got {v!r}")
    return convert(v)


def read_record(path: str | Path) -> dict:
    """A JSON record as a dict; a missing file or one that is not a JSON object is a RecordError."""
    path = Path(path)
    try:
        rec = read_json(path)
    except FileNotFoundError:
        raise RecordError(f"{path}: record is missing (did the job that writes it run?)") from None
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    if not isinstance(rec, dict):
        raise RecordError(f"{path}: the record must be a JSON object")
    return rec


def _str_or_none(v) -> str | None:
    return None if v is None else str(v)


def _getter(rec: dict, where: str):
    def get(key: str, kind: str, nullable: bool = False):
        return get_field(rec, key, where, kind, nullable)

    return get


class _Record:
    @classmethod
    def read(cls, path: str | Path):
        """The record in the JSON file at ``path`` (errors name the file)."""
        return cls.from_dict(read_record(path), str(path))


@dataclass(frozen=True)
class TrainingRecord(_Record):
    """The result of one training job (``metrics.json``)."""

    where: str
    arch_id: str
    arch: dict
    tokens_seen: int
    valid_loss: float
    final_train_loss: float
    steps: int
    wall_time_s: float | None
    tokens_per_s: float
    achieved_flops_per_s: float | None
    mfu: float | None
    device: str
    precision: str
    world_size: int
    resumed_from_step: int | None
    recipe: dict | None
    versions: dict[str, str | None]
    tokens_budget: int | None = None  # the run's token budget D (a horizon of a multi-horizon run)
    schedule: str | None = None  # "cosine" or "wsd" (a decay branch); None in records before horizons

    @classmethod
    def from_dict(cls, rec: dict, where: str = "training record") -> TrainingRecord:
        get = _getter(rec, where)

        versions = get("versions", "dict")
        out = cls(
            where=where, arch_id=get("arch_id", "str"), arch=get("arch", "dict"),
            tokens_seen=get("tokens_seen", "int"), valid_loss=get("valid_loss", "float"),
            final_train_loss=get("final_train_loss", "float"), steps=get("steps", "int"),
            wall_time_s=get("wall_time_s", "float", True), tokens_per_s=get("tokens_per_s", "finite"),
            achieved_flops_per_s=get("achieved_flops_per_s", "float", True), mfu=get("mfu", "float", True),
            device=get("device", "str"), precision=get("precision", "str"), world_size=get("world_size", "int"),
            resumed_from_step=get("resumed_from_step", "int", True),
            recipe=rec.get("recipe") if isinstance(rec.get("recipe"), dict) else None,
            versions={k: _str_or_none(versions.get(k)) for k in ("torch", "megatron_core", "archscale")},
            tokens_budget=get("tokens_budget", "int", True), schedule=get("schedule", "str", True),
        )
        if out.tokens_seen <= 0:
            raise RecordError(f"{where}: tokens_seen must be positive, got {out.tokens_seen}")
        return out


@dataclass(frozen=True)
class ThroughputRecord(_Record):
    """The inference throughput of one architecture at one or more batch sizes.

    ``batches`` holds the raw per-batch entries; :meth:`at` validates and returns one of them.
    All batch sizes share one prompt and output length (``input_len``, ``output_len``).
    """

    where: str
    arch_id: str
    arch: dict
    engine: str
    weights: str | None
    device: str
    device_name: str | None
    cpu_model: str | None
    nvml_available: bool
    input_len: int
    output_len: int
    batches: dict[int, dict] = field(repr=False)

    @classmethod
    def from_dict(cls, rec: dict, where: str = "throughput record") -> ThroughputRecord:
        get = _getter(rec, where)

        arch_id = get("arch_id", "str")
        batches: dict[int, dict] = {}
        lengths = None
        for i, r in enumerate(get("records", "list")):
            at = f"{where} records[{i}]"
            if not isinstance(r, dict):
                raise RecordError(f"{at}: must be an object")
            bs = get_field(r, "batch_size", at, "int")
            if bs in batches:
                raise RecordError(f"{at}: batch size {bs} appears twice")
            batches[bs] = r
            lens = (get_field(r, "input_len", at, "int"), get_field(r, "output_len", at, "int"))
            if lengths is not None and lens != lengths:
                raise RecordError(f"{at}: input/output lengths differ between batch sizes")
            lengths = lens
        out = dict(
            where=where, arch_id=arch_id, arch=rec.get("arch") if isinstance(rec.get("arch"), dict) else {},
            engine=get("engine", "str"), weights=get("weights", "str", True), device=get("device", "str"),
            device_name=_str_or_none(rec.get("device_name")), cpu_model=get("cpu_model", "str", True),
            nvml_available=get("nvml_available", "bool"),
        )
        if lengths is None:
            raise RecordError(f"{where}: 'records' is empty")
        return cls(**out, input_len=lengths[0], output_len=lengths[1], batches=batches)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.batches)

    def at(self, batch_size: int) -> dict[str, Any]:
        """The figures of :data:`THROUGHPUT_FIELDS` at ``batch_size`` (e.g. ``at(64)['output_tokens_per_s']``)."""
        bs = int(batch_size)
        if bs not in self.batches:
            raise RecordError(
                f"{self.where}: no record for batch size {bs} (has {self.batch_sizes}); re-run the throughput job"
            )
        where = f"{self.where} records[batch_size={bs}]"
        r = with_medians(self.batches[bs], where)
        return {
            name: get_field(r, name, where, "int" if typ == pa.int64() else ("float" if nullable else "finite"), nullable)
            for name, typ, nullable in THROUGHPUT_FIELDS
        }


def with_medians(rec: dict, where: str) -> dict:
    """A batch record with its rates replaced by their medians (and the output interval) when it has them."""
    med = rec.get("median")
    out = dict(rec, output_tokens_per_s_low=None, output_tokens_per_s_high=None)
    if med is None:
        return out
    if not isinstance(med, dict):
        raise RecordError(f"{where}: 'median' must be an object")
    for key in MEDIAN_FIELDS:
        if key in med:
            est = med[key]
            if est is not None and not isinstance(est, dict):
                raise RecordError(f"{where}: median.{key} must be an object with value, low, high")
            out[key] = None if est is None else est.get("value")
    est = med.get("output_tokens_per_s") or {}
    out["output_tokens_per_s_low"], out["output_tokens_per_s_high"] = est.get("low"), est.get("high")
    return out
