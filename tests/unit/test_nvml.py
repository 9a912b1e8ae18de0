"""NVML sampler: the real nvidia-ml-py on this machine, and the bookkeeping with a fake reader."""

import threading
import time

import pytest

from archscale.throughput import nvml


def _nvml_present() -> bool:
    reader, _ = nvml.open_reader()
    if reader is not None:
        reader.close()
    return reader is not None


# ---- the real library ------------------------------------------------------------------
def test_real_pynvml_absent_is_the_clean_path():
    pytest.importorskip("pynvml")
    if _nvml_present():
        pytest.skip("NVML present: covered by test_real_pynvml_reads_device")
    reader, reason = nvml.open_reader()
    assert reader is None
    assert "NVML" in reason and "NVMLError" in reason


def test_real_pynvml_absent_with_require_fails_clearly():
    if _nvml_present():
        pytest.skip("NVML present")
    with pytest.raises(nvml.NvmlUnavailable, match="throughput.require_nvml is true"):
        nvml.open_reader(require=True)


def test_real_pynvml_reads_device():
    if not _nvml_present():
        pytest.skip("no NVML on this machine (see test_real_pynvml_absent_is_the_clean_path)")
    reader, _ = nvml.open_reader()
    try:
        info = reader.info()
        assert info["device_name"] and info["driver_version"]
        sampler = nvml.Sampler(reader, interval_s=0.01)
        sampler.start()
        time.sleep(0.1)
        window = sampler.stop()
        assert window["samples"] >= 3
        assert window["power_peak_w"] > 0
        if window["energy_source"] == "counter":
            assert window["energy_j"] >= 0
    finally:
        reader.close()


def test_cpu_model_is_named():
    assert isinstance(nvml.cpu_model(), str) and nvml.cpu_model()


# ---- bookkeeping with a fake reader ------------------------------------------------------
class FakeReader:
    """Energy counter advancing by ``mj_per_read`` per read, optionally starting near the wrap."""

    def __init__(self, start_mj=0, mj_per_read=1000, power=(100.0, 300.0), energy=True):
        self.counter = start_mj
        self.mj_per_read = mj_per_read
        self.power = list(power)
        self.i = 0
        self.energy = energy
        self.lock = threading.Lock()

    def info(self):
        return {"device_name": "fake"}

    def energy_mj(self):
        if not self.energy:
            return None
        value = self.counter
        self.counter = (self.counter + self.mj_per_read) % nvml.ENERGY_COUNTER_MODULUS
        return value

    def sample(self):
        with self.lock:
            p = self.power[self.i % len(self.power)]
            self.i += 1
        return {"power_w": p, "memory_used_bytes": 1000 + self.i, "sm_util_pct": 50.0, "sm_clock_mhz": 1410,
                "mem_clock_mhz": 1215, "temperature_c": 40 + self.i, "mem_util_pct": 10.0}


def test_energy_delta_plain_and_across_wrap():
    assert nvml.energy_delta_mj(1000, 4500) == 3500
    m = nvml.ENERGY_COUNTER_MODULUS
    assert nvml.energy_delta_mj(m - 200, 300) == 500
    assert nvml.energy_delta_mj(90, 10, modulus=100) == 20


def test_sampler_energy_from_counter_across_wrap():
    reader = FakeReader(start_mj=nvml.ENERGY_COUNTER_MODULUS - 400, mj_per_read=1000)
    sampler = nvml.Sampler(reader, interval_s=0.005)
    sampler.start()
    time.sleep(0.05)
    window = sampler.stop()
    # two counter reads (start, stop): the second is 1000 mJ after the first, across the wrap
    assert window["energy_j"] == pytest.approx(1.0)
    assert window["energy_source"] == "counter"
    assert window["samples"] >= 3  # start, stop and the background thread
    assert window["power_peak_w"] == 300.0
    assert window["power_mean_w"] == pytest.approx(1.0 / window["window_s"])
    assert window["temperature_max_c"] == 40 + window["samples"]


def test_summarise_empty_window():
    out = nvml.summarise([], 5.0, 5.0, None, None)
    assert out["samples"] == 0
    assert out["energy_j"] is None and out["energy_source"] is None
    assert out["power_mean_w"] is None and out["power_peak_w"] is None
    assert out["sm_util_mean"] is None and out["memory_used_peak_bytes"] is None


def test_summarise_zero_duration_with_counter():
    out = nvml.summarise([], 1.0, 1.0, 10, 10)
    assert out["energy_j"] == 0.0 and out["power_mean_w"] is None


def test_summarise_falls_back_to_power_integral():
    samples = [(0.0, {"power_w": 100.0}), (1.0, {"power_w": 200.0}), (3.0, {"power_w": 200.0})]
    out = nvml.summarise(samples, 0.0, 3.0, None, None)
    assert out["energy_source"] == "power_integral"
    assert out["energy_j"] == pytest.approx(150.0 + 400.0)
    assert out["power_mean_w"] == pytest.approx(550.0 / 3.0)
    assert out["power_sample_mean_w"] == pytest.approx(500.0 / 3.0)


def test_summarise_ignores_unsupported_fields():
    samples = [(0.0, {"power_w": None, "sm_util_pct": 20.0}), (1.0, {"power_w": None, "sm_util_pct": 40.0})]
    out = nvml.summarise(samples, 0.0, 1.0, None, None)
    assert out["energy_j"] is None and out["power_peak_w"] is None
    assert out["sm_util_mean"] == 30.0 and out["sm_util_max"] == 40.0


def test_sampler_without_energy_counter_integrates_power():
    reader = FakeReader(energy=False, power=(250.0,))
    with nvml.Sampler(reader, interval_s=0.005) as sampler:
        time.sleep(0.05)
    window = sampler.result
    assert window["energy_source"] == "power_integral"
    assert window["energy_j"] == pytest.approx(250.0 * (sampler.samples[-1][0] - sampler.samples[0][0]))


def test_sampler_misuse():
    with pytest.raises(ValueError, match="nvml_interval_s"):
        nvml.Sampler(FakeReader(), interval_s=0)
    s = nvml.Sampler(FakeReader(), interval_s=0.01)
    with pytest.raises(RuntimeError, match="not started"):
        s.stop()
