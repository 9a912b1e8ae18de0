"""The sequential design as text: the unresolved optima, the proposals and their intervals."""

from __future__ import annotations

from typing import Any


def _interval_text(iv: list[float] | None, est: float | None = None) -> str:
    """A loss difference (``est`` given) as ``+0.049 [-0.105, 0.203]``; an optimum's interval as ``[2.34, 5.19]``."""
    if est is not None:
        return f"{est:+.3f} " + ("(no interval)" if iv is None else f"[{iv[0]:.3f}, {iv[1]:.3f}]")
    return "no interval" if iv is None else f"[{iv[0]:.3g}, {iv[1]:.3g}]"


def _iv(d: dict) -> str:
    if d["what"] == "optimum":
        return f"{d['estimate']:.3g} " + _interval_text(d["interval"])
    return _interval_text(d["interval"], d["estimate"])


def _excludes_zero(d: dict) -> bool:
    iv = d.get("interval")
    return iv is not None and (iv[0] > 0 or iv[1] < 0)


def _columns(rows: list[list[str]], right: int = 2) -> list[str]:
    """Rows padded to aligned columns (the last ``right`` columns, numbers, right-aligned)."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    cut = len(widths) - right
    return ["  ".join(v.ljust(w) if c < cut else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def format_sequential(res: dict[str, Any], source: str = "results") -> str:
    """The sequential design as text: the unresolved optima, the proposals (what, why, interval
    before -> after, cost) and the overlay's use."""
    nz = res["noise"]
    shared = ("" if nz["shared_fraction_ci95"] is None else
              f", {nz['shared_fraction']:.2f} [{nz['shared_fraction_ci95'][0]:.2f}, {nz['shared_fraction_ci95'][1]:.2f}] "
              "of its variance shared at a seed")
    lines = [f"Sequential design from {source}: fitted law {res['law']} ({res['form']}); per-run seed sd "
             f"{nz['per_run_sd']:.3g} [{nz['per_run_sd_ci95'][0]:.3g}, {nz['per_run_sd_ci95'][1]:.3g}]{shared}; "
             f"sd of a paired difference {nz['paired_difference_sd']:.3g}", ""]
    if not res["targets"]:
        lines.append(res.get("reason", "nothing to propose"))
    else:
        lines.append("Unresolved optima: interval now -> expected after the proposals (sweeps: the limiting rise "
                     "at the verdict's corrected level; fitted optima: 95%)")
        for t in res["targets"]:
            lv = f" ({100 * t['after']['level']:.3g}% level)" if t["what"] != "optimum" else " (95%)"
            lines.append(f"  {t['target']}, {t['what']}: {_iv(t)} -> {_iv(t['after'])}{lv}")
    if res["proposals"]:
        rows = [["#", "proposal", "why (narrows most)", "interval before -> after", "device-h", "runs"]]
        for k, p in enumerate(res["proposals"], 1):
            rows.append([str(k), p["what"], f"{p['why']}, {p['reads']}", f"{_iv(p['before'])} -> {_iv(p['after'])}",
                         f"{p['device_hours']:.3g}", str(len(p["runs"]))])
        lines += [""] + ["  " + ln for ln in _columns(rows)]
        lines.append(f"total: {len(res['new_runs'])} new training runs, {res['device_hours']:.3g} device-hours "
                     "(the plan's estimate, compute.*)")
    elif res["targets"]:
        lines += ["", res.get("reason", "no proposal")]
    stays = [t for t in res["targets"] if t["what"] != "optimum" and not _excludes_zero(t["after"])]
    if res["proposals"] and stays:
        lines.append("expected to stay unresolved after these proposals (the rise's interval still includes 0): "
                     + "; ".join(f"{t['target']}, {t['what']}" for t in stays)
                     + ". The proposals narrow them; a rise this small against the seed noise needs more seeds "
                     "(--suggest N, --budget HOURS) or a wider sweep to be settled.")
    lines += [f"note: {n}" for n in res["notes"]]
    lines.append("note: expected intervals assume the measured rises and seed noise hold; an extension's rise is the "
                 "fitted law's; a fitted optimum's interval shrinks by its linearised sd (delta method, paired noise)")
    return "\n".join(lines)
