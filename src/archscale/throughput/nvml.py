"""Power, energy and device state from NVML (nvidia-ml-py), sampled around a timed window.

Energy is the difference of the device's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded, an unsigned
64-bit counter) between the start and the end of the window, as Zeus and vLLM's energy meter
do. Where the counter is not supported (pre-Volta GPUs) energy falls back to the trapezoidal
integral of the sampled power, and the record says which one it is.

A background thread samples power, memory, SM utilisation, clocks and temperature every
``interval_s``; one sample is also taken synchronously at the start and at the end, so a
window shorter than the interval still has data.

The reader is an object with ``info()``, ``energy_mj()`` and ``sample()``; the real one wraps
pynvml, tests inject a fake to check the bookkeeping (deltas, counter wrap, empty windows).
Where NVML is absent (no library, no driver, no device) :func:`open_reader` returns ``None``
and the reason; ``require=True`` turns that into :class:`NvmlUnavailable`.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Callable, Protocol

#: nvmlDeviceGetTotalEnergyConsumption returns an unsigned long long (mJ).
ENERGY_COUNTER_MODULUS = 2**64

class NvmlUnavailable(RuntimeError):
    """NVML is required (``throughput.require_nvml: true``) but cannot be used."""


class Reader(Protocol):
    def info(self) -> dict: ...

    def energy_mj(self) -> int | None: ...

    def sample(self) -> dict: ...


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


class PynvmlReader:
    """The real reader: one device through nvidia-ml-py."""

    def __init__(self, index: int = 0):
        import pynvml

        self._nv = pynvml
        pynvml.nvmlInit()
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            pynvml.nvmlShutdown()
            raise
        self.index = index

    def _try(self, fn, *args):
        try:
            return fn(*args)
        except self._nv.NVMLError:
            return None

    def info(self) -> dict:
        nv, h = self._nv, self.handle
        cuda = self._try(nv.nvmlSystemGetCudaDriverVersion_v2) or self._try(nv.nvmlSystemGetCudaDriverVersion)
        mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
        limit = self._try(nv.nvmlDeviceGetEnforcedPowerLimit, h)
        return {
            "device_index": self.index,
            "device_name": _text(self._try(nv.nvmlDeviceGetName, h)),
            "driver_version": _text(self._try(nv.nvmlSystemGetDriverVersion)),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
            "nvml_version": _text(self._try(nv.nvmlSystemGetNVMLVersion)),
            "memory_total_bytes": int(mem.total) if mem is not None else None,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
        }

    def energy_mj(self) -> int | None:
        value = self._try(self._nv.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        return None if value is None else int(value)

    def sample(self) -> dict:
        nv, h = self._nv, self.handle
        power = self._try(nv.nvmlDeviceGetPowerUsage, h)
        mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
        util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
        return {
            "power_w": power / 1000.0 if power is not None else None,
            "memory_used_bytes": int(mem.used) if mem is not None else None,
            "sm_util_pct": float(util.gpu) if util is not None else None,
            "mem_util_pct": float(util.memory) if util is not None else None,
            "sm_clock_mhz": self._try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": self._try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
            "temperature_c": self._try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
        }

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except self._nv.NVMLError:
            pass


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def open_reader(index: int = 0, require: bool = False) -> tuple[PynvmlReader | None, str | None]:
    """The NVML reader of device ``index``, or ``(None, reason)`` where NVML cannot be used."""
    try:
        import pynvml  # noqa: F401
    except ImportError as exc:
        reason = f"nvidia-ml-py is not installed ({exc})"
    else:
        try:
            return PynvmlReader(index), None
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, InvalidArgument, ...
            reason = f"NVML unavailable: {type(exc).__name__}: {exc}"
    if require:
        raise NvmlUnavailable(
            f"{reason}; throughput.require_nvml is true, so this job must run on a machine with an "
            "NVIDIA driver and GPU (set throughput.require_nvml: false to measure without power and energy)"
        )
    return None, reason


def energy_delta_mj(start: int, end: int, modulus: int = ENERGY_COUNTER_MODULUS) -> int:
    """Energy between two readings of the total-energy counter, across one wrap of the counter."""
    if end >= start:
        return end - start
    return end + modulus - start


def _trapezoid(times: list[float], values: list[float]) -> float:
    return sum((t1 - t0) * (v0 + v1) / 2.0 for t0, t1, v0, v1 in zip(times, times[1:], values, values[1:]))


def summarise(
    samples: list[tuple[float, dict]],
    t_start: float,
    t_end: float,
    energy_start_mj: int | None,
    energy_end_mj: int | None,
    modulus: int = ENERGY_COUNTER_MODULUS,
) -> dict:
    """The window's record from its timed samples and counter readings (pure bookkeeping)."""
    duration = max(t_end - t_start, 0.0)
    out: dict = {"window_s": duration, "samples": len(samples)}
    if energy_start_mj is not None and energy_end_mj is not None:
        out["energy_j"] = energy_delta_mj(energy_start_mj, energy_end_mj, modulus) / 1000.0
        out["energy_source"] = "counter"
    else:
        power = [(t, s["power_w"]) for t, s in samples if s.get("power_w") is not None]
        if len(power) >= 2:
            out["energy_j"] = _trapezoid([t for t, _ in power], [p for _, p in power])
            out["energy_source"] = "power_integral"
        else:
            out["energy_j"] = None
            out["energy_source"] = None
    out["power_mean_w"] = out["energy_j"] / duration if out["energy_j"] is not None and duration > 0 else None

    def column(key):
        return [s[key] for _, s in samples if s.get(key) is not None]

    power = column("power_w")
    out["power_sample_mean_w"] = fmean(power) if power else None
    out["power_peak_w"] = max(power) if power else None
    mem = column("memory_used_bytes")
    out["memory_used_peak_bytes"] = max(mem) if mem else None
    for key, name in (("sm_util_pct", "sm_util"), ("sm_clock_mhz", "sm_clock"), ("mem_clock_mhz", "mem_clock")):
        values = column(key)
        out[f"{name}_mean"] = fmean(values) if values else None
        out[f"{name}_max"] = max(values) if values else None
    temps = column("temperature_c")
    out["temperature_max_c"] = max(temps) if temps else None
    return out


@dataclass
class Sampler:
    """Samples ``reader`` in a background thread between :meth:`start` and :meth:`stop`."""

    reader: Reader
    interval_s: float = 0.05
    clock: Callable[[], float] = time.monotonic
    samples: list = field(default_factory=list)

    def __post_init__(self):
        if self.interval_s <= 0:
            raise ValueError(f"throughput.nvml_interval_s must be > 0, got {self.interval_s}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _take(self):
        sample = self.reader.sample()
        with self._lock:
            self.samples.append((self.clock(), sample))

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self._take()

    def energy_mj(self) -> int | None:
        return self.reader.energy_mj()

    def start(self) -> "Sampler":
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self.samples = []
        self._stop.clear()
        self.t_start = self.clock()
        self.energy_start = self.reader.energy_mj()
        self._take()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        if self._thread is None:
            raise RuntimeError("sampler was not started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._take()
        energy_end = self.reader.energy_mj()
        t_end = self.clock()
        with self._lock:
            samples = list(self.samples)
        return summarise(samples, self.t_start, t_end, self.energy_start, energy_end)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self._thread is not None:
            self.result = self.stop()
        return False
