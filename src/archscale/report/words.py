"""How the report words things: numbers with units, sweeps as the config names them, grouped statuses.

A reader sees "17,400 tokens/s", not ``1.74e+04``; "s100k, r sweep at d/sqrt(N) 0.35", not the
plan's membership key ``r@scales[2].grid[1]|d_over_sqrt_n=0.35,gqa=1``; and a cause shared by
several checks once, with the checks it applies to, instead of once per check.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import Iterable, Iterator

import numpy as np

from ..sweeps import KNOB_WORDS, SWEEP_KEY_RE, Sweep  # noqa: F401 (KNOB_WORDS: re-exported)

def finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def num(v, unit: str = "", digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, thousands separators and ``unit``; "-" when missing.

    17412.3 -> "17,400", 0.000271 -> "0.000271", 3.9825 -> "3.98"; never exponent notation
    below 1e12.
    """
    if not finite(v):
        return "-"
    x = float(v)
    for power, word in ((12, "trillion"), (9, "billion")):
        if abs(x) >= 10**power and abs(x) < 10**(power + 3):
            return f"{num(x / 10**power, digits=digits)} {word}" + (f" {unit}" if unit else "")
    if abs(x) >= 1e15:
        mag = math.floor(math.log10(abs(x)))
        return f"{num(x / 10**mag, digits=digits)} x 10^{mag}" + (f" {unit}" if unit else "")
    if x == 0:
        text = "0"
    elif x.is_integer() and abs(x) < 1000:  # counts and sizes (layers, heads, d_model) as integers
        text = f"{int(x)}"
    else:
        mag = math.floor(math.log10(abs(x)))
        x = round(x, digits - 1 - mag)
        mag = math.floor(math.log10(abs(x))) if x else mag  # 99.96 rounds to 100
        decimals = max(0, digits - 1 - mag)
        text = f"{x:,.{decimals}f}"
    return f"{text} {unit}".strip() if unit else text


def interval(lo, hi, digits: int = 3) -> str:
    """"[lo, hi]" at ``digits`` significant digits, or "" when either end is missing."""
    return f"[{num(lo, digits=digits)}, {num(hi, digits=digits)}]" if finite(lo) and finite(hi) else ""


def span(lo, hi) -> str:
    """"lo-hi" at 3 significant digits, or one number when both ends read the same."""
    a, b = num(lo), num(hi)
    return a if a == b else f"{a}-{b}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """"1 seed", "3 seeds" (``many`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def sweep_name(key: str, scale: str | None = None) -> str:
    """A sweep membership as the user wrote it: "s100k, r sweep at d/sqrt(N) 0.35".

    ``key`` is the plan's membership (:attr:`archscale.sweeps.Sweep.key`) or its part after ``@``
    ("sweep at ..."); anything else is returned as it is.
    """
    key = key.strip()
    if not SWEEP_KEY_RE.fullmatch(key):
        return key
    bare = "@" not in key
    return Sweep.parse(f"sweep@{key}" if bare else key).name(scale, knob=not bare)


_PLURAL = re.compile(r"\b(\d+(?:[,.]\d+)*) ((?:[a-z]\w* )?)(\w+?)\((s|es)\)")
_SCI = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?e[+-]\d+\b")


def humanize(text: str) -> str:
    """Words for a reader in a sentence made elsewhere: sweep keys named, "1 seed(s)" in the
    right number, exponent notation written out."""
    text = SWEEP_KEY_RE.sub(lambda m: sweep_name(m.group(0)), text)
    text = _PLURAL.sub(lambda m: f"{m.group(1)} {m.group(2)}{m.group(3)}{'' if m.group(1) == '1' else m.group(4)}",
                       text)
    return _SCI.sub(lambda m: num(float(m.group(0))), text)


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


def _merge_numbers(causes: list[str]) -> str:
    """Causes equal but for their numbers -> one text, each differing number as "a or b"."""
    parts = [_NUMBER.split(c) for c in causes]
    out = []
    for i, tokens in enumerate(zip(*parts)):
        vals = list(dict.fromkeys(tokens))
        out.append(vals[0] if len(vals) == 1 or i % 2 == 0 else " or ".join(vals))
    return "".join(out)


def group_causes(items: Iterable[tuple[str, str]], noun: str) -> list[str]:
    """``(subject, cause)`` pairs -> one sentence per distinct cause, naming the subjects it holds for.

    ``noun`` names the subjects in the plural ("validation checks"): a cause shared by all of
    them reads "<cause> (in all 6 validation checks)"; by some, "<cause> (in 2 of 6 validation
    checks: a, b)". Causes that differ only in their numbers are one cause ("D takes 1 or 2
    distinct values").
    """
    items = [(s, c.strip().rstrip(".")) for s, c in items if c and c.strip()]
    total = len({s for s, _ in items})
    by_key: dict[str, tuple[list[str], list[str]]] = {}
    for subject, cause in items:
        subs, causes = by_key.setdefault(_NUMBER.sub("#", cause), ([], []))
        if subject not in subs:
            subs.append(subject)
        causes.append(cause)
    out = []
    for subs, causes in by_key.values():
        cause = _merge_numbers(causes)
        if len(subs) == total and total == 2:
            where = f"in both {noun}"
        elif len(subs) == total and total > 1:
            where = f"in all {total} {noun}"
        elif total > 1:
            where = f"in {len(subs)} of {total} {noun}: {', '.join(subs)}"
        else:
            where = subs[0]
        text = f"{cause[:-1]}; {where})." if cause.endswith(")") else f"{cause} ({where})."
        out.append(humanize(text[:1].upper() + text[1:]))
    return out


def group_by_subject(sentences: list[str], noun: str) -> list[str]:
    """"<subject>: <text>" sentences whose text repeats -> one sentence naming the subjects."""
    pairs, order = [], []
    for s in sentences:
        subject, sep, rest = s.partition(": ")
        if sep and len(subject) <= 40 and sum(t.partition(": ")[2] == rest for t in sentences) > 1:
            pairs.append((subject, rest))
            order.append(None)
        else:
            order.append(s)
    grouped = iter(group_causes(pairs, noun)) if pairs else iter(())
    out, done = [], False
    for s in order:
        if s is not None:
            out.append(s)
        elif not done:
            out.extend(grouped)
            done = True
    return out


def common_tail(sentences: list[str], min_chars: int = 30) -> tuple[list[str], str | None]:
    """The clause after the last "; " that every sentence ends with, said once: (heads, tail)."""
    if len(sentences) < 2:
        return sentences, None
    tails = {s.rsplit("; ", 1)[-1] for s in sentences if "; " in s}
    if len(tails) != 1 or not all("; " in s for s in sentences):
        return sentences, None
    tail = tails.pop()
    if len(tail) < min_chars:
        return sentences, None
    return [s.rsplit("; ", 1)[0] + "." for s in sentences], tail[:1].upper() + tail[1:]


@contextlib.contextmanager
def caught(notes: list[str], what: str) -> Iterator[None]:
    """Run numerical code without printing its warnings: each distinct one becomes one sentence
    in ``notes`` ("<what>: a division by zero was met and its result left out")."""
    with warnings.catch_warnings(record=True) as seen, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        yield
    for msg in dict.fromkeys(str(w.message).split(" encountered")[0] for w in seen):
        notes.append(f"{what}: {msg} (numerical warning; the affected values are left out).")


def repeated_sentences(text: str) -> dict[str, int]:
    """Sentences that occur more than once in ``text`` (split at '.', '!' or '?' then a space)."""
    counts: dict[str, int] = {}
    lines = [re.sub(r"\s+", " ", ln) for ln in text.splitlines()]  # a line break ends a sentence (headings)
    for s in (s for ln in lines for s in re.split(r"(?<=[.!?])\s+", ln)):
        s = s.strip()
        if len(s) > 20:
            counts[s] = counts.get(s, 0) + 1
    return {s: n for s, n in counts.items() if n > 1}
