"""A batched L-BFGS in numpy: one optimiser state per row, all rows advanced together.

Scaling-law fits are small (5 parameters, a few hundred points) but are started from
thousands of points (the Hoffmann et al. grid) and refitted hundreds of times (bootstrap).
Looping ``scipy.optimize.minimize`` over them costs seconds per hundred; advancing every
start at once with array operations costs about as much as a few dozen single fits. The
best few results are then polished with scipy (see :mod:`archscale.law.chinchilla`).

``fun(x, rows)`` evaluates the objective and its gradient for the parameter rows ``x``
(shape ``[k, p]``) of batch members ``rows`` (indices into the batch, so per-member data
such as bootstrap weights can be selected); it returns ``(f [k], g [k, p])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray  # [K, p] final parameters
    fun: np.ndarray  # [K] final objective (inf where it never became finite)
    converged: np.ndarray  # [K] bool: stopped on a tolerance, not on maxiter/line-search failure
    iterations: int


@dataclass
class _Memory:
    """The L-BFGS ring buffers of every row: steps ``S``, gradient changes ``Y``, ``1/(s.y)``."""

    S: np.ndarray  # [K, m, p]
    Y: np.ndarray  # [K, m, p]
    rho: np.ndarray  # [K, m]
    slot: int = 0

    @classmethod
    def empty(cls, k: int, memory: int, p: int) -> "_Memory":
        return cls(np.zeros((k, memory, p)), np.zeros((k, memory, p)), np.zeros((k, memory)))

    @property
    def size(self) -> int:
        return self.rho.shape[1]

    def direction(self, rows: np.ndarray, ga: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(d, g.d, |g|): the two-loop recursion over the ring buffer, newest pair first; a
        row whose direction is not a descent direction takes the normalised negative gradient."""
        S, Y, rho, memory = self.S, self.Y, self.rho, self.size
        q = ga.copy()
        order = [(self.slot - 1 - j) % memory for j in range(memory)]
        alph = np.zeros((rows.size, memory))
        for j in order:
            alph[:, j] = rho[rows, j] * np.einsum("ij,ij->i", S[rows, j], q)
            q -= alph[:, j, None] * Y[rows, j]
        newest = order[0]
        sy = np.einsum("ij,ij->i", S[rows, newest], Y[rows, newest])
        yy = np.einsum("ij,ij->i", Y[rows, newest], Y[rows, newest])
        gamma = np.where((sy > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), 0.0)
        first = gamma == 0.0
        gnorm = np.linalg.norm(ga, axis=1)
        gamma = np.where(first, 1.0 / np.maximum(gnorm, 1e-12) * np.minimum(1.0, gnorm), gamma)
        r = gamma[:, None] * q
        for j in reversed(order):
            beta = rho[rows, j] * np.einsum("ij,ij->i", Y[rows, j], r)
            r += S[rows, j] * (alph[:, j] - beta)[:, None]
        d = -r
        gd = np.einsum("ij,ij->i", ga, d)
        not_descent = ~(gd < 0) | ~np.all(np.isfinite(d), axis=1)
        if np.any(not_descent):
            d[not_descent] = -ga[not_descent] / np.maximum(gnorm[not_descent, None], 1e-300)
            gd[not_descent] = -gnorm[not_descent]
        return d, gd, gnorm

    def push(self, mv: np.ndarray, s: np.ndarray, y: np.ndarray, k: int) -> None:
        """Store the pairs of the rows ``mv`` that moved; every other row's slot is cleared."""
        sy_new = np.einsum("ij,ij->i", s, y)
        good = sy_new > 1e-300
        slot = self.slot
        self.S[mv, slot] = np.where(good[:, None], s, 0.0)
        self.Y[mv, slot] = np.where(good[:, None], y, 0.0)
        self.rho[mv, slot] = np.where(good, 1.0 / np.where(good, sy_new, 1.0), 0.0)
        others = np.setdiff1d(np.arange(k), mv, assume_unique=True)
        self.S[others, slot] = 0.0
        self.Y[others, slot] = 0.0
        self.rho[others, slot] = 0.0
        self.slot = (slot + 1) % self.size


def armijo_search(fun: Objective, rows, xa, fa, d, gd, max_linesearch: int):
    """Backtracking (Armijo) line search of all rows at once, the step shrunk by quadratic
    interpolation kept within [0.1 t, 0.5 t]; returns (t, f, g, pending) where ``pending``
    marks the rows for which no step decreased the objective."""
    t = np.ones(rows.size)
    pending = np.ones(rows.size, dtype=bool)
    fn = np.full(rows.size, np.inf)
    gn = np.zeros_like(xa)
    for _ in range(max_linesearch):
        idx = np.flatnonzero(pending)
        if idx.size == 0:
            break
        xt = xa[idx] + t[idx, None] * d[idx]
        with np.errstate(all="ignore"):
            ft, gt = fun(xt, rows[idx])
        ok = np.isfinite(ft) & np.all(np.isfinite(gt), axis=1) & (ft <= fa[idx] + 1e-4 * t[idx] * gd[idx])
        fn[idx[ok]] = ft[ok]
        gn[idx[ok]] = gt[ok]
        pending[idx[ok]] = False
        nk = idx[~ok]
        tk, fk, gdk = t[nk], ft[~ok], gd[nk]
        curv = fk - fa[nk] - gdk * tk
        with np.errstate(all="ignore"):
            tq = -gdk * tk * tk / (2.0 * curv)
        tq = np.where(np.isfinite(tq) & (curv > 0), tq, 0.5 * tk)
        t[nk] = np.clip(tq, 0.1 * tk, 0.5 * tk)
    return t, fn, gn, pending


def batched_lbfgs(
    fun: Objective,
    x0: np.ndarray,
    *,
    maxiter: int = 500,
    memory: int = 10,
    ftol: float = 1e-13,
    gtol: float = 1e-10,
    max_linesearch: int = 40,
) -> BatchResult:
    """Minimise ``fun`` from every row of ``x0`` with L-BFGS and Armijo backtracking.

    A row stops when its relative decrease in one iteration falls below ``ftol``, its
    largest gradient component below ``gtol``, or when no step along the search direction
    (nor along the negative gradient) decreases it.
    """
    x = np.array(x0, dtype=float, copy=True)
    k, p = x.shape
    with np.errstate(all="ignore"):
        f, g = fun(x, np.arange(k))
    bad = ~np.isfinite(f) | ~np.all(np.isfinite(g), axis=1)
    f = np.where(bad, np.inf, f)
    active = ~bad
    converged = np.zeros(k, dtype=bool)
    mem = _Memory.empty(k, memory, p)
    it = 0
    for it in range(1, maxiter + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        xa, fa, ga = x[rows], f[rows], g[rows]
        d, gd, _ = mem.direction(rows, ga)
        t, fn, gn, pending = armijo_search(fun, rows, xa, fa, d, gd, max_linesearch)
        moved = ~pending
        # Rows whose line search failed are finished (at a kink or at machine precision).
        stuck = rows[~moved]
        active[stuck] = False
        converged[stuck] = True
        if not np.any(moved):
            continue
        mv = rows[moved]
        s = t[moved, None] * d[moved]
        mem.push(mv, s, gn[moved] - ga[moved], k)
        f_old = f[mv]
        x[mv] = xa[moved] + s
        f[mv] = fn[moved]
        g[mv] = gn[moved]
        done = (np.abs(f_old - f[mv]) <= ftol * np.maximum(1.0, np.abs(f[mv]))) | (
            np.max(np.abs(g[mv]), axis=1) <= gtol
        )
        active[mv[done]] = False
        converged[mv[done]] = True
    return BatchResult(x=x, fun=f, converged=converged, iterations=it)
