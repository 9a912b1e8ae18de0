"""The report as a reader sees it: the built pages opened in headless chromium at 1280x900.

Chromium is driven with its own command line only (``--headless --dump-dom`` and
``--screenshot``), so no dependency beyond the Debian package ``chromium``: a probe script,
injected into a copy of each page, records after load where the answer table sits, whether
every image decoded, the page's errors and its visible text, into the DOM that ``--dump-dom``
prints. Console messages are also read from chromium's log (``--enable-logging=stderr``).

The reports are built from the fixture study (tests/helpers/study.py), once with the fit's
optima and once with none resolved. Without chromium the test is skipped, unless
ARCHSCALE_REQUIRE_BROWSER=1 (then it fails). ARCHSCALE_SCREENSHOT_DIR=DIR keeps the
first-viewport screenshots of the findings (docs/img/ holds them).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.study import write_study

from archscale import search as S
from archscale.io import write_json, write_parquet
from archscale.report import OUTPUTS, build_report
from archscale.report.words import repeated_sentences
from archscale.study import Study

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1280, 900
#: Internal keys and unformatted numbers a reader must never see.
FORBIDDEN = {"sweep key": r"grid\[", "held-knob key": r"\|r=", "None": r"\bNone\b", "NaN": r"\bnan\b",
             "exponent notation": r"\de\+0", "plural placeholder": r"\(s\)"}
PAGES = ("findings", "chosen", "plan")

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)), true);
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); __consoleError(...a); };
window.addEventListener('load', () => {
  const t = document.getElementById('answer');
  const box = t ? t.getBoundingClientRect() : null;
  const imgs = Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}));
  const out = {viewport: [window.innerWidth, window.innerHeight], scrollY: window.scrollY,
               answer: box && {top: box.top, bottom: box.bottom, left: box.left, right: box.right},
               images: imgs, errors: window.__errors, text: document.body.innerText};
  const pre = document.createElement('pre');
  pre.id = '__probe'; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("ARCHSCALE_REQUIRE_BROWSER") == "1":
            pytest.fail("ARCHSCALE_REQUIRE_BROWSER=1 but no chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium) to test the report pages")
    return exe


def browser_args(exe: str, profile: Path) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"]


def probe(exe: str, page: Path, tmp: Path) -> dict:
    """Open a copy of ``page`` with the probe injected; return what the probe saw, and the log's errors."""
    copy = page.with_name(f"__probe_{page.name}")
    text = page.read_text()
    copy.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    proc = subprocess.run(
        [*browser_args(exe, tmp / "profile"), "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0",
         "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=60)
    copy.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"{page.name}: chromium printed no probe result (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(m.group(1)))
    seen["log_errors"] = [ln for ln in proc.stderr.splitlines()
                          if "CONSOLE" in ln and re.search(r"error|uncaught|failed", ln, re.I)]
    return seen


def screenshot(exe: str, page: Path, out: Path, tmp: Path) -> Path:
    subprocess.run([*browser_args(exe, tmp / "profile"), f"--screenshot={out}", page.as_uri()],
                   capture_output=True, text=True, timeout=60, check=True)
    return out


def searched_study(root: Path, optimum: bool) -> dict:
    """The fixture study with each search target run on its records (measured = 1.05 x predicted)."""
    st = write_study(root, optimum=optimum)
    study = Study.from_config(st["config"])
    settings = study.search_settings
    results, paretos = [], []
    for name, target in study.search_targets.items():
        cands, space = S.prepare_from_files(
            target.to_dict(), settings.to_dict(), root / "results/runs.parquet", root / "results/fit/conditional.json",
            root / "results/throughput/cost_model.json")
        eff = S.cost_model_efficiency(st["cost_model"], settings.input_len, settings.output_len, settings.batch_size)
        res, par = S.select(cands, space, lambda a: 1.05 * eff(S.measure_arch(cands, a)))
        S.attach_probabilities(res, cands["law_forms"])
        results.append(root / f"results/search/{name}/result.json")
        paretos.append(root / f"results/search/{name}/pareto.parquet")
        write_json(results[-1], res)
        write_parquet(paretos[-1], par)
    outputs = {k: str(root / "results/report" / (k + (".png" if kind == "figure" else ".html")))
               for k, (kind, _) in OUTPUTS.items()}
    outputs["index"] = str(root / "results/report/index.json")
    build_report(outputs=outputs, plan=root / "results/plan/plan.parquet", runs=root / "results/runs.parquet",
                 conditional=root / "results/fit/conditional.json", validation=root / "results/fit/validation.parquet",
                 curves=[root / f"results/train/{a}/curve.parquet" for a in st["runs"]["arch_id"]],
                 search_results=results, search_pareto=paretos, title="archscale fixture study",
                 cost_model=root / "results/throughput/cost_model.json")
    return outputs


@pytest.mark.parametrize("optimum", [True, False], ids=["fixture-study", "no-resolved-finding"])
def test_report_pages_in_a_headless_browser(tmp_path, optimum):
    exe = chromium()
    outputs = searched_study(tmp_path, optimum)
    problems = []
    for name in PAGES if optimum else PAGES[:1]:  # chosen and plan do not depend on the fit's optima
        seen = probe(exe, Path(outputs[name]), tmp_path)
        # Layout depends on the width only; the first screen is the top HEIGHT px of the page
        # (headless chromium's window may report a shorter innerHeight than --window-size).
        assert seen["viewport"][0] == WIDTH and seen["scrollY"] == 0, seen["viewport"]
        problems += [f"{name}: image '{i['alt']}' did not load" for i in seen["images"] if not i["ok"]]
        problems += [f"{name}: console error: {e}" for e in seen["errors"] + seen["log_errors"]]
        for what, pattern in FORBIDDEN.items():
            for m in re.finditer(pattern, seen["text"], re.I if what == "NaN" else 0):
                problems.append(f"{name}: {what} in the visible text: ...{seen['text'][max(0, m.start() - 60):m.end() + 30]!r}")
        if name == "findings":
            box = seen["answer"]
            if box is None:
                problems.append("findings: no answer table (id 'answer')")
            elif not (box["top"] >= 0 and box["bottom"] <= HEIGHT and box["right"] <= WIDTH):
                problems.append(f"findings: the answer table is not inside the first {WIDTH}x{HEIGHT} viewport: {box}")
            assert len(seen["images"]) >= 5, "the findings page shows the figures"
            repeated = repeated_sentences(seen["text"])
            problems += [f"findings: sentence said {n} times: {s!r}" for s, n in repeated.items()]
    assert not problems, "\n".join(problems)

    shots = os.environ.get("ARCHSCALE_SCREENSHOT_DIR")
    out = Path(shots) if shots else tmp_path
    png = screenshot(exe, Path(outputs["findings"]), out / f"report-findings-{'fixture' if optimum else 'no-optimum'}.png",
                     tmp_path)
    assert png.stat().st_size > 10_000
