"""Coordinate descent with working sets for the lasso and the elastic net.

Solves, for weights ``w`` (p,) and, with ``fit_intercept``, an unpenalized intercept ``b``::

    min_{w, b}  ½ Σ_i s_i (y_i - x_iᵀw - b)² / Σ_i s_i  +  Σ_j λ_j |w_j|  +  ½ Σ_j μ_j w_j²

(``s`` sample weights, ``λ``/``μ`` scalars or one per feature): scikit-learn's
``Lasso(alpha=λ)`` and ``ElasticNet(alpha=λ + μ, l1_ratio=λ / (λ + μ))`` with the same
``sample_weight``. The intercept is profiled out: the problem is solved on data centred
with the sample weights, without forming the centred matrix (each coordinate update
uses ``x_j - x̄_j`` on the fly), and ``b = ȳ - x̄ᵀw`` (:meth:`CoordinateDescent.intercept`).

The algorithm is the one of celer / scikit-learn, in one compiled loop:

* **working sets** (implicit mode): each iteration computes the correlations ``Xᵀr``
  once, ranks the features by how close they are to violating the optimality
  conditions (the support first, then ``(λ_j - |x_jᵀr|/n) / ||x_j||``), and runs epochs
  of cyclic coordinate descent (a ``lax.fori_loop`` over the working set, with
  precomputed column norms and residual updates) on the ``max(ws_start, 2 |support|)``
  best-ranked ones until an epoch's decrease is small next to the duality gap;
* **stopping rule**: the duality gap of scikit-learn's ``enet_coordinate_descent`` (the
  residual rescaled into the dual feasible set) divided by ``Σ s_i y_i² / Σ s_i`` (``y``
  centred with an intercept): ``state.error <= tol`` means what scikit-learn's ``tol``
  means, ``gap <= tol · ||y||² / n``.

In unrolled mode (``implicit_diff=False``) one iteration is one full epoch over all
coordinates: a working set's data-dependent loop lengths would make the iterations a
``while_loop``, which reverse mode cannot differentiate.

**The hypergradient on the support.** Implicit differentiation uses the optimality
condition restricted to the support ``S = {j : w_j ≠ 0}`` (exact at a solution, where
``S`` is locally constant)::

    F(w)_j = ∇_j f(w_S) + λ_j sign(w_j) + μ_j w_j   (j ∈ S),     F(w)_j = w_j   (j ∉ S)

whose Jacobian is ``blockdiag(X_Sᵀ W X_S / n + diag(μ_S), I)``: symmetric positive
definite, solved matrix-free by conjugate gradient (the default ``implicit_diff_solve``)
in at most ``|S| + 1`` iterations, each two products with ``X``. It equals the
hypergradient of the full proximal fixed point ``w = prox(w - η∇f(w))`` (which needs a
non-symmetric ``p × p`` system) to rounding.

Sparse designs: the correlations, residuals and the implicit system go through
:mod:`hyperopt.linop` (``X @ v``, ``X.T @ u``, column norms); the coordinate loop reads
rows of ``Xᵀ`` and needs a dense ``X`` for now.

Example:
    >>> cd = CoordinateDescent(fit_intercept=True)
    >>> w = cd.run(jnp.zeros(p), 0.1, X, y).params            # Lasso(alpha=0.1)
    >>> b = cd.intercept(w, X, y)
    >>> w = cd.run(jnp.zeros(p), (0.05, 0.05), X, y).params   # elastic net
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt import linop
from hyperopt.linear_solve import solve_cg
from hyperopt.solvers.base import IterativeSolver, OptStep, default_tol

__all__ = ["CDState", "CoordinateDescent"]

NEWTON_CAP = 128  # largest support the Newton step solves for (a Cholesky of its Gram matrix)


class CDState(NamedTuple):
    """State of :class:`CoordinateDescent`.

    ``error``: the duality gap relative to ``Σ s_i y_i² / Σ s_i`` (scikit-learn's ``tol``);
    ``gap``: the duality gap itself; ``corr``: ``-∇`` of the smooth part at ``params``
    (``X_cᵀ W r / n - μ w``, shape (p,)); ``ws_size``: size of the last working set;
    ``epochs``: coordinate-descent epochs run (each over one working set).
    """

    iter_num: jax.Array
    error: jax.Array
    converged: jax.Array
    gap: jax.Array
    corr: jax.Array
    ws_size: jax.Array
    epochs: jax.Array


class _Data(NamedTuple):
    """What every iteration reuses, computed once per run."""

    X: Any  # (n, p), dense or linop.SparseMatrix
    sw: jax.Array  # (n,) sample weights
    n: jax.Array  # Σ sw
    xbar: jax.Array  # (p,) weighted column means (zeros without an intercept)
    yc: jax.Array  # (n,) y - ȳ (y without an intercept)
    col: jax.Array  # (p,) Σ s_i (x_ij - x̄_j)² / n
    ynorm: jax.Array  # Σ s_i yc_i² / n, scikit-learn's tol scale
    l1: jax.Array  # (p,)
    l2: jax.Array  # (p,)
    lasso: bool  # no μ given (static): a solution has at most n non-zeros


def _penalties(hyperparams, p: int, dtype):
    """``(λ, μ)`` broadcast to (p,) from ``λ`` or ``(λ, μ)``."""
    if isinstance(hyperparams, (tuple, list)):
        l1, l2 = hyperparams
    else:
        l1, l2 = hyperparams, 0.0
    return (jnp.broadcast_to(jnp.asarray(l1, dtype), (p,)),
            jnp.broadcast_to(jnp.asarray(l2, dtype), (p,)))


def _soft(z, t):
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - t, 0.0)


def _support_first(mask, cap: int):
    """The first ``cap`` of ``jnp.argsort(~mask, stable=True)`` (the indices where ``mask``
    holds, then the others, each in index order) in O(p): a running count instead of a sort
    (XLA's CPU sort of 7129 keys with their indices takes milliseconds)."""
    p = mask.shape[0]
    inside = jnp.cumsum(mask, dtype=jnp.int32)
    iota = jnp.arange(p, dtype=jnp.int32)
    rank = jnp.where(mask, inside - 1, inside[-1] + iota - inside)
    return jnp.zeros(p, jnp.int32).at[rank].set(iota, unique_indices=True)[:cap]


def _first_holding(caps: tuple, size):
    """Index of the first of the increasing static ``caps`` that is ``>= size`` (as
    ``jnp.searchsorted``, whose default method is a ``while_loop``: a few comparisons are
    smaller code)."""
    return sum((size > c).astype(jnp.int32) for c in caps[:-1]) if len(caps) > 1 else jnp.int32(0)


def _ranking(score):
    """``jnp.argsort(score)`` up to ties within 2⁻³² relative (broken by index, as the
    stable sort breaks exact ties), as one sort of int64 keys: the score's order-preserving
    64-bit pattern with its low bits replaced by the index. XLA's CPU sort of one integer
    array is ~5x faster than the sort of (key, index) pairs with a comparator that
    ``argsort`` lowers to. ``score`` must be float64 without NaN (-inf sorts first); other
    dtypes, or p ≥ 2²⁰, use ``argsort``."""
    p = score.shape[0]
    bits = max(1, (p - 1).bit_length())
    if score.dtype != jnp.float64 or bits > 20:
        return jnp.argsort(score).astype(jnp.int32)
    b = jax.lax.bitcast_convert_type(score, jnp.int64)
    key = jnp.where(b < 0, b ^ jnp.int64(0x7FFFFFFFFFFFFFFF), b)  # monotone in the score
    low = jnp.int64((1 << bits) - 1)
    key = (key & ~low) | jnp.arange(p, dtype=jnp.int64)
    return (jnp.sort(key) & low).astype(jnp.int32)


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class CoordinateDescent(IterativeSolver):
    """Lasso / elastic-net coordinate descent; ``run(init_params, hyperparams, X, y,
    sample_weight=None)``.

    ``hyperparams`` is ``λ`` (lasso) or ``(λ, μ)`` (elastic net, the penalty
    ``λ|w| + ½ μ w²``), each a scalar or a (p,) array (per-feature penalties). ``λ`` is
    ``prox_lasso``'s ``l1reg``; ``(λ, μ)`` is *not* ``prox_elastic_net``'s ``(a, b)``, which
    penalizes ``a (|w| + ½ b w²)`` (JAXopt's definition): the same objective there is
    ``(λ, μ / λ)``. ``sample_weight`` (n,) defaults to ones. ``params`` is ``w`` (p,).

    Attributes:
      maxiter: working-set iterations (unrolled mode: epochs over all coordinates).
      tol: duality-gap tolerance relative to ``||y||²/n`` (scikit-learn's meaning; its
        default is 1e-4, this library's 1e-10 in float64 for accurate hypergradients).
      fit_intercept: solve for an unpenalized intercept (centring done implicitly).
      ws_start: smallest working set.
      max_epochs: epochs on one working set per iteration.
      ws_ratio, gap_ratio: an iteration's epochs stop when an epoch's decrease
        ``Σ L_j Δw_j²`` is below ``ws_ratio · max(gap_ratio · gap, tol ||y||²/n)`` (``gap``
        at the iteration's start): a working set is solved nearly to the final tolerance
        once the gap is close to it.
      max_reps: epochs on a working set between two tests of that rule: as many as cost
        what the next working-set iteration's full correlation ``Xᵀr`` costs (``n p``
        multiply-adds), an update of one coordinate counting ``n + coord_cost``, at least
        one and at most ``max_reps``.
      coord_cost: the fixed cost of one coordinate update in multiply-adds (the loop's and
        the kernels' overhead on CPU, ~0.5 µs): with few samples an update costs far more
        than its ``n`` multiply-adds, and several epochs per test would be wasted work
        (measured on 400 × 1000: 83 epochs in 7 iterations → 21 in 9, cold).
      ws_caps: the working set's epochs run on its columns gathered into the smallest of
        these sizes (or ``p``) that holds it: small loop carries, fast updates. Each size
        is a copy of the epochs' code in the compiled program (and of the support
        system's, see :meth:`optimality_fun`), whose load time from the persistent cache
        grows with its size; so for the lasso (``hyperparams`` a single ``λ``) the sizes
        above the first one that holds ``2 n`` columns (``n`` rows of ``X``) are dropped:
        a lasso solution has at most ``n`` non-zeros (for data in general position), and
        a working set is twice the support. When a kept size holds ``2 n`` (``n``), the
        lasso has no all-``p`` copy either: its working sets are at most the largest kept
        size (support first; a support larger than that, which data in general position
        never reach, is worked through in slices of it), and its support system is NaN
        for a support larger than that (the implicit system is singular there: a lasso
        support of more than ``n`` features does not determine its weights), so that the
        hypergradient's failure is reported. The elastic net keeps all sizes, and ``p``.
      newton: before a working set's epochs, a Newton step on the support (at most
        ``NEWTON_CAP`` = 128 features) up to the first sign change, where that weight is set
        to zero (an active-set step: always a decrease); exact for the lasso's quadratic
        once the signs are right (tight tolerances in a few iterations instead of many
        epochs; warm-started from a nearby penalty, the support is often the solution's
        already, and one epoch confirms it: 1 epoch instead of 5 on 400 × 1000).

    Example:
      >>> w = CoordinateDescent(tol=1e-8).run(jnp.zeros(p), 0.1, X, y).params
    """

    default_linear_solve: ClassVar = staticmethod(solve_cg)  # the support system is SPD

    maxiter: int = 200
    fit_intercept: bool = False
    ws_start: int = 10
    max_epochs: int = 10_000
    ws_ratio: float = 0.1
    gap_ratio: float = 1e-2
    max_reps: int = 16
    coord_cost: int = 2000
    ws_caps: tuple = (256, 1024)
    newton: bool = True

    def __post_init__(self):
        super().__post_init__()
        for name in ("ws_start", "max_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value > 0):
                raise ValueError(f"{name}={value!r}; allowed: a positive integer")
        for name in ("ws_ratio", "gap_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: a number in (0, 1)")
        if not (isinstance(self.max_reps, (int, np.integer)) and self.max_reps > 0):
            raise ValueError(f"max_reps={self.max_reps!r}; allowed: a positive integer")
        if not (isinstance(self.coord_cost, (int, np.integer)) and self.coord_cost >= 0):
            raise ValueError(f"coord_cost={self.coord_cost!r}; allowed: an integer >= 0")

    # -- data and the quantities of one point ---------------------------------------------
    def _data(self, hyperparams, X, y, sample_weight) -> _Data:
        X = X if linop.is_sparse(X) else jnp.asarray(X)
        y = jnp.asarray(y)
        n_rows, p = X.shape
        dtype = jnp.result_type(X.dtype, y.dtype)
        sw = jnp.ones(n_rows, dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
        n = jnp.sum(sw)
        if self.fit_intercept:
            xbar = linop.rmatvec(X, sw) / n
            ybar = jnp.sum(sw * y) / n
        else:
            xbar, ybar = jnp.zeros(p, dtype), jnp.zeros((), dtype)
        yc = y - ybar
        col = jnp.maximum(linop.column_sq_norms(X, sw) / n - xbar ** 2, 0.0)
        l1, l2 = _penalties(hyperparams, p, dtype)
        return _Data(X, sw, n, xbar, yc, col, jnp.sum(sw * yc ** 2) / n, l1, l2,
                     not isinstance(hyperparams, (tuple, list)))

    def _residual(self, w, d: _Data):
        """Centred residual ``y_c - X_c w`` (``Σ s r = 0`` with an intercept)."""
        return d.yc - linop.matvec(d.X, w) + jnp.vdot(d.xbar, w)

    def _corr(self, w, r, d: _Data):
        sr = d.sw * r
        return (linop.rmatvec(d.X, sr) - d.xbar * jnp.sum(sr)) / d.n - d.l2 * w

    def _gap(self, w, r, corr, d: _Data):
        """Duality gap of scikit-learn's ``enet_coordinate_descent``, divided by ``n``."""
        ratio = jnp.where(d.l1 > 0, jnp.abs(corr) / jnp.where(d.l1 > 0, d.l1, 1.0), 0.0)
        dual_norm = jnp.max(ratio)
        const = jnp.where(dual_norm > 1, 1.0 / jnp.where(dual_norm > 1, dual_norm, 1.0), 1.0)
        r_norm2 = jnp.sum(d.sw * r ** 2) / d.n
        l2_term = 0.5 * jnp.sum(d.l2 * w ** 2)
        gap = (0.5 * r_norm2 * (1 + const ** 2) + jnp.sum(d.l1 * jnp.abs(w))
               - const * jnp.sum(d.sw * r * d.yc) / d.n + (1 + const ** 2) * l2_term)
        return jnp.maximum(gap, 0.0)

    def _error(self, gap, d: _Data):
        return gap / jnp.where(d.ynorm > 0, d.ynorm, 1.0)

    def _state(self, w, d: _Data, iter_num, ws_size, epochs, tol):
        r = self._residual(w, d)
        corr = self._corr(w, r, d)
        gap = self._gap(w, r, corr, d)
        error = self._error(gap, d)
        return CDState(jnp.asarray(iter_num), error, error <= tol, gap, corr,
                       jnp.asarray(ws_size, jnp.int32), jnp.asarray(epochs, jnp.int32)), r

    # -- coordinate updates ---------------------------------------------------------------
    def _coordinate(self, j, w, r, XT, d: _Data):
        """Exact minimization over ``w_j``; returns ``(w, r, L_j Δ²)``."""
        x = XT[j] - d.xbar[j]
        old = w[j]
        curv = d.col[j] + d.l2[j]
        z = jnp.sum(x * d.sw * r) / d.n + d.col[j] * old
        new = jnp.where(curv > 0, _soft(z, d.l1[j]) / jnp.where(curv > 0, curv, 1.0), 0.0)
        delta = new - old
        return w.at[j].set(new), r - delta * x, curv * delta ** 2

    def _epochs(self, w, r, order, size, target, d: _Data, XT):
        """Epochs over ``order[:size]``, as many at a time as cost a full correlation (see
        ``max_reps``), until an epoch decreases by at most ``target``.

        The epochs run on the working set's own arrays — its centred columns, weights and
        penalties gathered into the smallest of ``ws_caps + (p,)`` rows that holds it
        (one ``lax.switch`` branch per capacity) — and the weights are scattered back at
        the end: a loop that carries all ``p`` weights pays for them at every coordinate
        update (measured: 7 µs per update at p = 7129 against 0.6-1 µs at 128)."""
        p, n = XT.shape
        caps = self._branches(p, 2 * n, d.lasso)
        reps = jnp.clip(jnp.floor(p * n / (size * (n + self.coord_cost))).astype(jnp.int32), 1,
                        self.max_reps)

        def restricted(cap):
            def solve(w, r):
                idx = order[:cap]
                Xs = XT[idx] - d.xbar[idx][:, None]  # (cap, n): centred columns
                Xw = Xs * (d.sw / d.n)[None, :]
                curv = d.col[idx] + d.l2[idx]
                ws, r, epochs = self._ws_epochs(w[idx], r, Xs, Xw, d.col[idx], curv, d.l1[idx],
                                                size, reps, target)
                return w.at[idx].set(ws), r, epochs
            return solve

        if self.newton:  # one copy, outside the branches (the programs' size is their load time)
            w, r = self._newton(w, r, d, XT)
        branch = _first_holding(caps, size)
        w, _, epochs = jax.lax.switch(branch, [restricted(c) for c in caps], w, r)
        return w, epochs

    def _newton(self, w, r, d: _Data, XT):
        """A Newton step on the support, up to the first sign change.

        On the face ``{sign(w_S) fixed, w_{not S} = 0}`` the objective is a quadratic; its
        minimizer is ``w_S - Δ`` with ``(X_Sᵀ W X_S / n + diag(μ_S)) Δ = F_S(w)`` (the
        support's optimality condition; Cholesky of the Gram matrix of the support's columns,
        gathered into ``NEWTON_CAP`` rows). Along ``w_S - tΔ`` the objective is that convex
        quadratic until a weight reaches zero, so the step goes to ``t = min(1, first zero
        crossing)`` and sets the weight that crosses first to exactly 0 (an active-set step:
        it always decreases the objective). With ``t = 1`` and the inactive features
        satisfying their conditions (the next duality gap checks), it is the solution up to
        rounding. Skipped when the support does not fit ``NEWTON_CAP`` or the solve is not
        finite (a rank-deficient support is left to the epochs). Returns ``(w, r)``."""
        cap = min(NEWTON_CAP, w.shape[0])
        support = w != 0
        pos = _support_first(support, cap)
        inside, wk, sign = support[pos], w[pos], jnp.sign(w[pos])
        Xk = XT[pos] - d.xbar[pos][:, None]  # (cap, n): the support's centred columns
        Xwk = Xk * (d.sw / d.n)[None, :]
        l1, l2 = d.l1[pos], d.l2[pos]
        both = inside[:, None] & inside[None, :]
        H = jnp.where(both, Xwk @ Xk.T, 0.0) + jnp.diag(jnp.where(inside, l2, 1.0))
        F = jnp.where(inside, l2 * wk + l1 * sign - Xwk @ r, 0.0)
        delta = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), F)
        # w_j - t Δ_j reaches zero at t = w_j / Δ_j where Δ_j has w_j's sign
        crosses = inside & (sign * delta > 0)
        t_zero = jnp.where(crosses, wk / jnp.where(crosses, delta, 1.0), jnp.inf)
        t = jnp.minimum(jnp.min(t_zero), 1.0)
        step = t * delta
        new = jnp.where(crosses & (t_zero <= t), 0.0, wk - step)
        keep = (jnp.sum(support) <= cap) & jnp.all(jnp.isfinite(delta)) & (t > 0)
        return (w.at[pos].set(jnp.where(keep, new, wk)),
                jnp.where(keep, r + Xk.T @ (wk - new), r))

    def _ws_epochs(self, w, r, Xs, Xw, col, curv, l1, size, reps, target):
        """Cyclic epochs over the first ``size`` of the gathered coordinates."""
        def body(k, c):
            w, r, dec = c
            old = w[k]
            z = jnp.dot(Xw[k], r) + col[k] * old
            new = jnp.where(curv[k] > 0, _soft(z, l1[k]) / jnp.where(curv[k] > 0, curv[k], 1.0), 0.0)
            delta = new - old
            return w.at[k].set(new), r - delta * Xs[k], dec + curv[k] * delta ** 2

        def epoch(_, c):
            w, r, _ = c
            return jax.lax.fori_loop(0, size, body, (w, r, jnp.zeros((), w.dtype)))

        def chunk(carry):
            w, r, epochs, _ = carry
            w, r, dec = jax.lax.fori_loop(0, reps, epoch, (w, r, jnp.zeros((), w.dtype)))
            return w, r, epochs + reps, dec

        def cond(carry):
            _, _, epochs, dec = carry
            return (epochs < self.max_epochs) & (dec > target)

        init = (w, r, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, w.dtype))
        w, r, epochs, _ = jax.lax.while_loop(cond, chunk, init)
        return w, r, epochs

    def _step(self, w, state: CDState, d: _Data, XT, tol):
        p = w.shape[0]
        if not self.implicit_diff:  # unrolled: one full epoch, static length
            def body(j, c):
                w, r = c
                w, r, _ = self._coordinate(j, w, r, XT, d)
                return w, r
            w, _ = jax.lax.fori_loop(0, p, body, (w, self._residual(w, d)))
            new_state, _ = self._state(w, d, state.iter_num + 1, p, state.epochs + 1, tol)
            return w, new_state
        support = w != 0
        score = (d.l1 - jnp.abs(state.corr)) / jnp.sqrt(d.col + d.l2 + jnp.finfo(w.dtype).tiny)
        score = jnp.where(support, -jnp.inf, score)
        order = _ranking(score)
        # twice the support (celer), never smaller than the last one (no cycling)
        largest = self._branches(p, 2 * XT.shape[1], d.lasso)[-1]
        size = jnp.clip(jnp.maximum(jnp.maximum(self.ws_start, 2 * jnp.sum(support)),
                                    state.ws_size), 1, largest).astype(jnp.int32)
        target = self.ws_ratio * jnp.maximum(self.gap_ratio * state.gap, tol * d.ynorm)
        w, epochs = self._epochs(w, self._residual(w, d), order, size, target, d, XT)
        new_state, _ = self._state(w, d, state.iter_num + 1, size, state.epochs + epochs, tol)
        return w, new_state

    def _caps(self, p: int, needed: int, lasso: bool) -> tuple:
        """The gathered sizes below ``p`` (see ``ws_caps``); for the lasso, none above the
        first that holds ``needed`` columns."""
        caps = sorted({int(c) for c in self.ws_caps if c < p})
        if lasso:
            fits = [c for c in caps if c >= needed]
            caps = [c for c in caps if c < needed] + fits[:1]
        return tuple(caps)

    def _branches(self, p: int, needed: int, lasso: bool) -> tuple:
        """The sizes of the gathered copies (see ``ws_caps``): the kept ones, then ``p``
        unless this is a lasso whose largest kept size holds ``needed``."""
        caps = self._caps(p, needed, lasso)
        return caps if lasso and caps and caps[-1] >= needed else caps + (p,)

    def _tol(self, params):
        return default_tol(params) if self.tol is None else self.tol

    # -- the solver interface -------------------------------------------------------------
    def init_state(self, init_params, hyperparams, X, y, sample_weight=None) -> CDState:
        d = self._data(hyperparams, X, y, sample_weight)
        return self._state(init_params, d, 0, 0, 0, self._tol(init_params))[0]

    def update(self, params, state: CDState, hyperparams, X, y, sample_weight=None) -> OptStep:
        """One working-set iteration (unrolled mode: one epoch)."""
        d = self._data(hyperparams, X, y, sample_weight)
        return OptStep(*self._step(params, state, d, _transposed(X), self._tol(params)))

    def _run_iterations(self, init_params, hyperparams, X, y, sample_weight=None):
        from hyperopt.loop import run_loop

        tol = self._tol(init_params)
        d = self._data(hyperparams, X, y, sample_weight)
        XT = _transposed(X)
        state, _ = self._state(init_params, d, 0, 0, 0, tol)
        step = lambda w, state: self._step(w, state, d, XT, tol)
        return run_loop(step, init_params, state, maxiter=self.maxiter, tol=tol,
                        unrolled=not self.implicit_diff, verbose=self.verbose,
                        checkpoint=self.unroll_checkpoint)

    def optimality_fun(self, params, hyperparams, X, y, sample_weight=None):
        """The optimality condition on the support (see the module docstring): zero at a
        solution; its Jacobian is ``blockdiag(X_Sᵀ W X_S / n + diag(μ_S), I)``."""
        d = self._data(hyperparams, X, y, sample_weight)
        support = params != 0
        p = params.shape[0]

        def full(params):
            w_s = jnp.where(support, params, 0.0)
            grad = -self._corr(w_s, self._residual(w_s, d), d)
            return jnp.where(support, grad + d.l1 * jnp.sign(params), params)

        if linop.is_sparse(X):
            return full(params)

        # Dense X: the support's columns gathered into the smallest of ws_caps that holds
        # them, so that each product of the implicit system's matrix (one per conjugate
        # gradient iteration) costs n x cap, not n x p. Exact: the gradient on S needs only X_S.
        def restricted(cap):
            def f(params):
                idx = _support_first(support, cap)
                inside = support[idx]
                w = jnp.where(inside, params[idx], 0.0)
                Xc = X[:, idx] - d.xbar[idx]  # (n, cap): centred columns
                r = d.yc - Xc @ w
                grad = -(Xc.T @ (d.sw * r)) / d.n + d.l2[idx] * w
                return params.at[idx].set(jnp.where(inside, grad + d.l1[idx] * jnp.sign(params[idx]),
                                                    params[idx]))
            return f

        sizes = self._branches(p, X.shape[0], d.lasso)
        if sizes == (p,):
            return full(params)
        count = jnp.sum(support)
        branches = [restricted(c) for c in sizes if c < p] + ([full] if sizes[-1] == p else [])
        out = jax.lax.switch(_first_holding(sizes, count), branches, params)
        if sizes[-1] == p:
            return out
        # a lasso support larger than the largest kept size (> n): singular, reported as NaN
        # (a product, so that the system's products with the Jacobian are NaN too)
        return out * jnp.where(count > sizes[-1], jnp.nan, 1.0).astype(out.dtype)

    def intercept(self, params, X, y, sample_weight=None):
        """The intercept ``b = ȳ - x̄ᵀw`` (weighted means; 0 without ``fit_intercept``);
        differentiable."""
        if not self.fit_intercept:
            return jnp.zeros((), jnp.result_type(X.dtype, y.dtype))
        sw = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else sample_weight
        return jnp.sum(sw * (y - linop.matvec(X, params))) / jnp.sum(sw)


def _transposed(X):
    if linop.is_sparse(X):
        raise NotImplementedError("CoordinateDescent needs a dense X for its coordinate loop; "
                                  "use ProximalGradient for a sparse design")
    return jnp.asarray(X).T
