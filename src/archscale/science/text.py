"""Plain-text rendering of a plan-the-science result (``archscale plan --science``)."""

from __future__ import annotations

from typing import Any


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _knob(s: dict | None) -> tuple[str, str, str]:
    if not s or not s.get("fitted"):
        return "not fitted", "-", "-"
    spread = s.get("spread_2.5_50_97.5")
    sp = "-" if not spread else f"{spread[0]:.3g}-{spread[2]:.3g}"
    return f"{s['p_interior']:.0%}", _num(s["median_interval_width"], ".3g"), sp


def format_science(res: dict[str, Any]) -> str:
    prior = res["prior_optimum"]
    lines = [
        f"Plan the science: prior law '{res['law']}' (optimum d/sqrt(N)* = {_num(prior['d_over_sqrt_n'], '.4g')}, "
        f"r* = {_num(prior['r'], '.4g')}), seed noise {res['seed_noise']:.3g}, {res['simulations']} simulated studies "
        f"of {res['architectures']} architectures, reference {res['reference']}, r in {res['r_range']}",
        "",
        f"{'scales':<28} {'form':<14} {'pts':>4}  {'P(x* int)':>9} {'width x*':>9} {'x* 95% of studies':>18}"
        f"  {'P(r* int)':>9} {'width r*':>9} {'r* 95% of studies':>18}",
    ]
    for s in res["scale_sets"]:
        for form, f in s["forms"].items():
            if f.get("status") != "ok":
                lines.append(f"{s['scales']:<28} {form:<14} {s['n_points']:>4}  {f['status']}")
                continue
            px, wx, sx = _knob(f["d_over_sqrt_n"])
            pr, wr, sr = _knob(f["r"])
            lines.append(f"{s['scales']:<28} {form:<14} {s['n_points']:>4}  {px:>9} {wx:>9} {sx:>18}  {pr:>9} {wr:>9} {sr:>18}")
    lines.append("P(int): share of simulated studies whose fit reports an interior optimum (point and interval inside "
                 "the sampled range, the fit's guard); width: median interval width; " + res["interval_method"])
    full = res["scale_sets"][res["full_set"]]
    lines += ["", f"Can the full grid ({full['scales']}) find the optima?"]
    for form, f in full["forms"].items():
        for v in f.get("verdict", [f.get("status")]):
            lines.append(f"  {form}: {v}")
    if res["validation"]:
        lines += ["", "Expected progressive validation Spearman (mean, 95% of studies; empirical reference):"]
        for t in res["validation"]:
            parts = [f"{form} {v['mean']:.2f} [{v['2.5_97.5'][0]:.2f}, {v['2.5_97.5'][1]:.2f}]" if v and v["mean"] is not None
                     else f"{form} -" for form, v in t["forms"].items()]
            lines.append(f"  {t['task']:<32} " + "; ".join(parts))
    if res.get("sweeps"):
        lines += ["", f"One-knob sweeps read from the runs (per-run seed sd {res['seed_noise']:.3g}, "
                      f"{res.get('seed_shared_fraction', 0.0):.0%} of its variance shared at a seed; "
                      f"{res.get('sweep_rule', '')}):"]
        for w in res["sweeps"]:
            what = (f"resolved in {w['p_resolved']:.0%} of simulated studies (interior optimum {w['p_interior_resolved']:.0%})"
                    if "note" not in w else w["note"])
            lines.append(f"  {w['scale']} {w['knob']} along {w['sweep']} ({w['architectures']} architectures, "
                         f"{w['seeds']} matched seeds; prior: {w['true_shape']}): {what}")
    if res["panda"]:
        lines += ["", "Search: probability that the Panda is the prior law's Panda (full-set fit):"]
        for p in res["panda"]:
            if p.get("status") != "ok":
                lines.append(f"  {p.get('target')}: {p.get('status')}")
            else:
                lines.append(f"  {p['target']} ({p['form']}): {p['p_prior_panda']:.0%} pick {p['prior_panda']} "
                             f"(of {p['candidates']} candidates; most picked {p['most_picked'][0]['arch_id']} "
                             f"{p['most_picked'][0]['share']:.0%})")
    sug = res.get("suggestions")
    if sug:
        lines += ["", "Suggested grid points (most narrowing of the optima per device-hour; linearised at the prior):"]
        lines += ["  " + ln for ln in sug["yaml"].rstrip("\n").splitlines()]
    for n in res.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
