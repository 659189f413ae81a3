"""Linear solvers for the implicit system ``A x = b``.

Every solver follows one contract::

    x = solve(matvec, b, **options)

where ``matvec(x)`` computes ``A @ x`` on a pytree ``x`` with the structure of ``b``.
The solvers are matrix-free (:func:`solve_cg`, :func:`solve_normal_cg`,
:func:`solve_gmres`, :func:`solve_bicgstab`) or dense (:func:`solve_cholesky`,
:func:`solve_lu`, which materialize ``A`` with one batched ``matvec`` and suit systems of
up to a few thousand unknowns). :func:`solve_auto`, the default of the whole library,
takes LU up to ``dense_threshold`` (600) unknowns and GMRES above it.

A solve that fails is never silent (JAXopt issue #466: zero hypergradients with no
warning). After solving, every iterative solver computes the true relative residual
``||A x - b|| / ||b||`` (one extra ``matvec``) and checks it against ``10 * tol``; the dense
solvers check the normwise backward error ``||A x - b|| / (||A|| ||x|| + ||b||)`` against
``sqrt(eps)`` (a direct solve of an ill-conditioned but regular system passes; a failed
factorization does not). When the check fails or gives NaN, the solver acts according to
``on_failure``:

* ``"warn"`` (default): emit a :class:`LinearSolveWarning` naming the residual;
* ``"raise"``: raise :class:`LinearSolveError` (under ``jit`` it surfaces wrapped in
  JAX's runtime error, with the same message);
* ``"ignore"``: do nothing.

The check runs inside compiled code through :func:`jax.debug.callback`, so it works
under ``jit``, ``vmap``, ``grad`` and ``jvp``. To read the residual as a number, use
``root_vjp(..., return_residual=True)`` or :func:`relative_residual`.

Example:
    >>> import jax.numpy as jnp
    >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    >>> x = solve_cg(lambda v: A @ v, jnp.array([1.0, 0.0]))
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.sparse.linalg as jsp_linalg
import numpy as np
from jax.flatten_util import ravel_pytree

from hyperopt.tree_util import tree_norm

__all__ = [
    "LinearSolveError",
    "LinearSolveWarning",
    "relative_residual",
    "returns_least_squares",
    "system_residual",
    "solve_auto",
    "solve_bicgstab",
    "solve_cg",
    "solve_cholesky",
    "solve_gmres",
    "solve_inv",
    "solve_iterative_refinement",
    "solve_lstsq",
    "solve_lu",
    "solve_normal_cg",
    "solve_qr",
]

Matvec = Callable[[Any], Any]
_ON_FAILURE = ("warn", "raise", "ignore")


class LinearSolveWarning(RuntimeWarning):
    """A linear solve of the implicit system did not reach its tolerance."""


class LinearSolveError(RuntimeError):
    """A linear solve of the implicit system did not reach its tolerance."""


def _dtype(b):
    leaves = jax.tree.leaves(b)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def _default_tol(b) -> float:
    """1e-10 in float64; about 6e-6 in float32 (or any float32 leaf), where 1e-10 is out of reach."""
    eps = max((float(np.finfo(leaf.dtype).eps) for leaf in jax.tree.leaves(b)), default=1e-16)
    return max(1e-10, 50 * eps)


def _size(b) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(b))


def relative_residual(matvec: Matvec, b, x) -> jax.Array:
    """``||matvec(x) - b|| / ||b||`` (``||matvec(x)||`` when ``b`` is zero)."""
    r = jax.tree.map(jnp.subtract, matvec(x), b)
    b_norm = tree_norm(b)
    return tree_norm(r) / jnp.where(b_norm > 0, b_norm, 1.0)


def _with_ridge(matvec: Matvec, ridge: float | None) -> Matvec:
    if ridge is None:
        return matvec
    return lambda x: jax.tree.map(lambda ax, xi: ax + ridge * xi, matvec(x), x)


def _report(name: str, residual, check_tol: float, on_failure: str, details: str,
            measure: str = "relative residual") -> None:
    """Host-side check of a finished solve: warn or raise when it fell short."""
    if on_failure not in _ON_FAILURE:
        raise ValueError(f"on_failure={on_failure!r}; allowed: {', '.join(_ON_FAILURE)}")
    if on_failure == "ignore":
        return

    def callback(res):
        res = float(jnp.max(res))  # under vmap the callback may see a batch
        if res <= check_tol:  # False for NaN, so NaN is reported
            return
        msg = (
            f"{name} did not converge: {measure} {res:.3g} > {check_tol:.3g} "
            f"({details}); raise maxiter/tol or pick another solve="
        )
        if on_failure == "raise":
            raise LinearSolveError(msg)
        warnings.warn(msg, LinearSolveWarning, stacklevel=2)

    # The host callback runs only when the check fails (inside the cond's false branch):
    # a callback on every solve costs a device-host round trip (~0.5 ms per hypergradient,
    # measured on experiments/bench_jaxopt.py --quick). NaN fails ``<=`` and is reported.
    # Under vmap the predicate is batched and the cond runs both branches, as before.
    if not isinstance(residual, jax.core.Tracer):  # eager: check right here
        callback(residual)
        return
    ok = jnp.all(residual <= check_tol)
    jax.lax.cond(ok, lambda res: None, lambda res: jax.debug.callback(callback, res), residual)


def _checked(name, matvec, b, x, check_tol, on_failure, details):
    _report(name, relative_residual(matvec, b, x), check_tol, on_failure, details)
    return x


def _check_positive(name: str, value, allowed: str = "a positive number") -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name}={value!r}; allowed: {allowed}")


def _common_dtype(matvec, b, init):
    """Runs the solve in one dtype when ``b`` mixes float32 and float64 leaves (the Krylov
    loops of ``jax.scipy`` need one carry dtype); the solution keeps each leaf's dtype."""
    dtype = _dtype(b)
    if all(leaf.dtype == dtype for leaf in jax.tree.leaves(b)):
        return matvec, b, init, lambda x: x
    up = lambda tree: jax.tree.map(lambda leaf: leaf.astype(dtype), tree)
    back = lambda x: jax.tree.map(lambda xi, bi: xi.astype(bi.dtype), x, b)
    return (lambda x: up(matvec(back(x)))), up(b), (None if init is None else up(init)), back


def _iterative(method, name, matvec, b, *, ridge, init, tol, atol, maxiter, on_failure, **kw):
    _check_positive("tol", tol)
    _check_positive("maxiter", maxiter, "a positive integer or None")
    tol = _default_tol(b) if tol is None else tol
    matvec, b, init, back = _common_dtype(_with_ridge(matvec, ridge), b, init)
    x, _ = method(matvec, b, x0=init, tol=tol, atol=atol, maxiter=maxiter, **kw)
    maxiter_txt = maxiter if maxiter is not None else f"default {10 * _size(b)}"
    details = f"tol={tol:g}, maxiter={maxiter_txt}"
    return back(_checked(name, matvec, b, x, 10 * tol, on_failure, details))


def solve_cg(matvec: Matvec, b, *, ridge: float | None = None, init=None,
             tol: float | None = None, atol: float = 0.0, maxiter: int | None = None,
             on_failure: str = "warn", M: Matvec | None = None):
    """Conjugate gradient for a symmetric positive definite ``A`` (e.g. a Hessian).

    Args:
      matvec: ``x -> A x`` on pytrees shaped like ``b``.
      b: right-hand side, a pytree of arrays.
      ridge: optional ``r``: solves ``(A + r I) x = b``.
      init: optional warm start (pytree like ``b``); zeros by default.
      tol: relative tolerance on ``||A x - b|| / ||b||``; default 1e-10 in float64,
        ~6e-6 in float32.
      atol: absolute tolerance.
      maxiter: iteration cap (default ``10 * size(b)``).
      on_failure: ``"warn"``, ``"raise"`` or ``"ignore"`` (see the module docstring).
      M: optional preconditioner ``x -> ≈ A⁻¹ x`` (symmetric positive definite), e.g.
        an L-BFGS inverse Hessian; ``tol`` still applies to the true residual.

    Returns:
      ``x``, a pytree like ``b``.
    """
    kw = {} if M is None else {"M": _same_dtypes(M)}
    return _iterative(_cg, "solve_cg", matvec, b, ridge=ridge, init=init, tol=tol,
                      atol=atol, maxiter=maxiter, on_failure=on_failure, **kw)


def _cg(A, b, x0=None, *, tol, atol=0.0, maxiter=None, M=None):
    """``jax.scipy.sparse.linalg.cg`` (the same iterates, stopping rule and
    ``custom_linear_solve`` wrapping), except that without ``x0`` it starts from ``r = b``
    instead of computing ``b - A 0``: one product with ``A`` fewer in the compiled program
    (each is a copy of ``A``'s code, e.g. the lasso support system's gathers), whose size
    is its load time from the persistent cache. Returns ``(x, None)``."""
    maxiter = 10 * _size(b) if maxiter is None else maxiter
    identity = M is None
    M = (lambda v: v) if identity else M
    vdot = lambda x, y: sum(jnp.vdot(a, c).real
                            for a, c in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True))
    axpy = lambda a, x, y: jax.tree.map(lambda xi, yi: yi + a.astype(yi.dtype) * xi, x, y)

    def solve(A, b):
        atol2 = jnp.maximum(jnp.square(tol) * vdot(b, b), jnp.square(atol))
        if x0 is None:
            x, r = jax.tree.map(jnp.zeros_like, b), b
        else:
            x = x0
            r = jax.tree.map(jnp.subtract, b, A(x0))
        p = z = M(r)
        dtype = jnp.result_type(*jax.tree.leaves(p))
        gamma = vdot(r, z).astype(dtype)

        def cond(value):
            _, r, gamma, _, k = value
            rs = gamma.real if identity else vdot(r, r)
            return (rs > atol2) & (k < maxiter)

        def body(value):
            x, r, gamma, p, k = value
            Ap = A(p)
            alpha = gamma / vdot(p, Ap).astype(dtype)
            x = axpy(alpha, p, x)
            r = axpy(-alpha, Ap, r)
            z = M(r)
            gamma_new = vdot(r, z).astype(dtype)
            p = axpy(gamma_new / gamma, p, z)
            return x, r, gamma_new, p, k + 1

        return jax.lax.while_loop(cond, body, (x, r, gamma, p, 0))[0]

    real = all(not jnp.issubdtype(leaf.dtype, jnp.complexfloating) for leaf in jax.tree.leaves(b))
    return jax.lax.custom_linear_solve(A, b, solve=solve, transpose_solve=solve, symmetric=real), None


def _same_dtypes(M: Matvec) -> Matvec:
    """``M`` with outputs cast to its input's dtypes (the CG loop carry keeps them)."""
    def wrapped(v):
        return jax.tree.map(lambda out, x: jnp.asarray(out, jnp.result_type(x)), M(v), v)
    return wrapped


def solve_bicgstab(matvec: Matvec, b, *, ridge: float | None = None, init=None,
                   tol: float | None = None, atol: float = 0.0, maxiter: int | None = None,
                   on_failure: str = "warn"):
    """BiCGSTAB for a general square ``A``. Arguments as in :func:`solve_cg`."""
    return _iterative(jsp_linalg.bicgstab, "solve_bicgstab", matvec, b, ridge=ridge, init=init,
                      tol=tol, atol=atol, maxiter=maxiter, on_failure=on_failure)


def solve_gmres(matvec: Matvec, b, *, ridge: float | None = None, init=None,
                tol: float | None = None, atol: float = 0.0, maxiter: int | None = None,
                restart: int = 50, on_failure: str = "warn"):
    """Restarted GMRES for a general square ``A``.

    Arguments as in :func:`solve_cg`; ``restart`` is the Krylov subspace size between
    restarts and ``maxiter`` the number of restarts, by default ``ceil(10 * size(b) /
    restart)``: at most ``10 * size(b)`` matrix-vector products, as CG. (JAX's own default,
    ``10 * size(b)`` restarts, is ``restart`` times more: on a badly conditioned system, such
    as the implicit system of an SVM dual solved only loosely, up to 5.4 million products for
    10 790 unknowns, hours at the ~4 ms a product took there; this cap stops after ~108 000
    and reports the residual.)
    """
    _check_positive("restart", restart, "a positive integer")
    if maxiter is None:
        maxiter = max(1, -(-10 * _size(b) // int(restart)))
    return _iterative(jsp_linalg.gmres, "solve_gmres", matvec, b, ridge=ridge, init=init,
                      tol=tol, atol=atol, maxiter=maxiter, restart=restart,
                      on_failure=on_failure)


def solve_normal_cg(matvec: Matvec, b, *, ridge: float | None = None, init=None,
                    tol: float | None = None, atol: float = 0.0, maxiter: int | None = None,
                    on_failure: str = "warn"):
    """CG on the normal equations ``AᵀA x = Aᵀb`` (any non-singular ``A``).

    Squares the condition number, so it is slower and less accurate than
    :func:`solve_gmres` on ill-conditioned systems; kept for JAXopt compatibility.
    ``ridge`` regularizes the normal system: ``(AᵀA + r I) x = Aᵀb``. Without ``ridge`` the
    check is on the original system's residual ``||Ax - b|| / ||b||``; with it, on the
    regularized normal system's (whose solution does not solve ``Ax = b``).
    """
    _check_positive("tol", tol)
    _check_positive("maxiter", maxiter, "a positive integer or None")
    tol = _default_tol(b) if tol is None else tol
    matvec, b, init, back = _common_dtype(matvec, b, init)
    transpose = jax.linear_transpose(matvec, b)
    rmatvec = lambda y: transpose(y)[0]
    normal_matvec = _with_ridge(lambda x: rmatvec(matvec(x)), ridge)
    normal_b = rmatvec(b)
    x, _ = jsp_linalg.cg(normal_matvec, normal_b, x0=init, tol=tol, atol=atol, maxiter=maxiter)
    details = f"normal equations, tol={tol:g}, maxiter={maxiter}"
    if ridge is None:
        return back(_checked("solve_normal_cg", matvec, b, x, 10 * tol, on_failure, details))
    return back(_checked("solve_normal_cg", normal_matvec, normal_b, x, 10 * tol, on_failure, details))


def _dense(factor_solve, name, matvec, b, ridge, on_failure):
    flat_b, unravel = ravel_pytree(b)
    flat_matvec = lambda v: ravel_pytree(matvec(unravel(v)))[0]
    flat_matvec = _with_ridge(flat_matvec, ridge)
    # Column j of A is A e_j; vmap materializes all columns in one batched matvec.
    a = jax.vmap(flat_matvec, in_axes=1, out_axes=1)(jnp.eye(flat_b.size, dtype=flat_b.dtype))
    flat_x = factor_solve(a, flat_b)
    # A direct solve is judged by its normwise backward error ||Ax - b|| / (||A|| ||x|| + ||b||),
    # which is ~eps for a successful solve however ill-conditioned A is, and NaN/large when the
    # factorization failed (singular, or not positive definite for Cholesky).
    denominator = jnp.linalg.norm(a) * jnp.linalg.norm(flat_x) + jnp.linalg.norm(flat_b)
    residual = jnp.linalg.norm(a @ flat_x - flat_b)
    backward_error = residual / jnp.where(denominator > 0, denominator, 1.0)  # b = 0: x = 0
    # the least precise leaf sets the bar (ravel_pytree promotes float32 leaves to float64)
    check_tol = float(np.sqrt(max(np.finfo(leaf.dtype).eps for leaf in jax.tree.leaves(b))))
    _report(name, backward_error, check_tol, on_failure, f"dense {flat_b.size}x{flat_b.size} system",
            measure="backward error")
    return unravel(flat_x)


def solve_cholesky(matvec: Matvec, b, *, ridge: float | None = None, on_failure: str = "warn"):
    """Dense Cholesky solve for a symmetric positive definite ``A``.

    Materializes ``A`` (``size(b)`` squared entries). A matrix that is not positive
    definite gives NaN, which the residual check reports.
    """
    def factor_solve(a, v):
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), v)
    return _dense(factor_solve, "solve_cholesky", matvec, b, ridge, on_failure)


def solve_lu(matvec: Matvec, b, *, ridge: float | None = None, on_failure: str = "warn"):
    """Dense LU solve (partial pivoting) for a general square ``A``."""
    return _dense(jnp.linalg.solve, "solve_lu", matvec, b, ridge, on_failure)


def solve_qr(matvec: Matvec, b, *, ridge: float | None = None, on_failure: str = "warn"):
    """Dense QR solve (``A = QR``, then ``R x = Qᵀ b``) for a general square ``A``.

    Materializes ``A``; JAXopt's signature (``ridge`` adds ``ridge · I``).

    Example:
      >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
      >>> x = solve_qr(lambda v: A @ v, jnp.array([1.0, 0.0]))
    """
    def factor_solve(a, v):
        q, r = jnp.linalg.qr(a)
        return jax.scipy.linalg.solve_triangular(r, q.T @ v)
    return _dense(factor_solve, "solve_qr", matvec, b, ridge, on_failure)


def solve_inv(matvec: Matvec, b, *, ridge: float | None = None, on_failure: str = "warn"):
    """Dense solve by the explicit inverse, ``x = A⁻¹ b`` (JAXopt's; prefer :func:`solve_lu`,
    which is cheaper and more accurate).

    Example:
      >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
      >>> x = solve_inv(lambda v: A @ v, jnp.array([1.0, 0.0]))
    """
    return _dense(lambda a, v: jnp.linalg.inv(a) @ v, "solve_inv", matvec, b, ridge, on_failure)


def solve_iterative_refinement(matvec: Matvec, b, init=None, maxiter: int = 10,
                               tol: float = 1e-7, solve: Callable | None = None, *,
                               on_failure: str = "warn", **solve_options):
    """Iterative refinement: ``x ← x + solve(A, b - A x)`` until ``||b - A x|| ≤ tol``.

    JAXopt's signature and defaults (``maxiter=10`` refinements, absolute ``tol=1e-7``,
    inner ``solve`` GMRES). Each inner solve runs with ``on_failure="ignore"``; the final
    result fails (warning, or ``on_failure``) when its residual is above both ``tol`` and
    10 × the dtype's default relative tolerance.

    Args:
      matvec: ``x -> A x`` on pytrees like ``b``.
      b: right-hand side (pytree).
      init: initial ``x`` (default zeros).
      maxiter: maximum number of refinement steps.
      tol: absolute tolerance on ``||b - A x||``.
      solve: inner solver ``solve(matvec, r) -> x`` (default :func:`solve_gmres`).
      on_failure: ``"warn"``, ``"raise"`` or ``"ignore"``.
      **solve_options: passed to the inner ``solve`` (e.g. ``ridge``).

    Example:
      >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
      >>> x = solve_iterative_refinement(lambda v: A @ v, jnp.array([1.0, 0.0]))
    """
    _check_positive("maxiter", maxiter, "a positive integer")
    solve = solve_gmres if solve is None else solve
    if solve in (solve_cg, solve_gmres, solve_bicgstab, solve_normal_cg, solve_lu,
                 solve_cholesky, solve_qr, solve_inv):
        solve_options = {"on_failure": "ignore", **solve_options}
    x0 = jax.tree.map(jnp.zeros_like, b) if init is None else init
    residual = lambda x: jax.tree.map(jnp.subtract, b, matvec(x))

    def cond(carry):
        _, r, k = carry
        return (k < maxiter) & (tree_norm(r) > tol)

    def body(carry):
        x, r, k = carry
        x = jax.tree.map(jnp.add, x, solve(matvec, r, **solve_options))
        return x, residual(x), k + 1

    x, r, _ = jax.lax.while_loop(cond, body, (x0, residual(x0), 0))
    # a failure is a residual above the absolute tol and above the dtype's relative one
    measure = jnp.where(tree_norm(r) <= tol, 0.0, relative_residual(matvec, b, x))
    _report("solve_iterative_refinement", measure, 10 * _default_tol(b), on_failure,
            f"tol={tol:g}, maxiter={maxiter}")
    return x


def solve_lstsq(matvec: Matvec, b, *, rcond: float | None = None, on_failure: str = "warn"):
    """Dense minimum-norm least-squares solve, ``x = A⁺ b`` (SVD), for a singular ``A``.

    Materializes ``A``. Singular values below ``rcond · σ_max`` (default ``100 · n · eps``)
    count as zero. When ``A`` is singular and ``b`` is not in its range, ``x`` minimizes
    ``||A x - b||`` (the check is then on the normal equations' backward error,
    ``||Aᵀ(A x - b)|| / (||A||² ||x|| + ||A|| ||b||)``).

    Example:
      >>> A = jnp.array([[1.0, 1.0], [1.0, 1.0]])          # singular
      >>> x = solve_lstsq(lambda v: A @ v, jnp.array([2.0, 2.0]))   # [1., 1.]
    """
    flat_b, unravel = ravel_pytree(b)
    flat_matvec = lambda v: ravel_pytree(matvec(unravel(v)))[0]
    a = jax.vmap(flat_matvec, in_axes=1, out_axes=1)(jnp.eye(flat_b.size, dtype=flat_b.dtype))
    flat_x = _pinv_solve(a, flat_b, rcond)
    _report("solve_lstsq", _normal_backward_error(a, flat_b, flat_x), _sqrt_eps(b), on_failure,
            f"dense {flat_b.size}x{flat_b.size} system", measure="backward error")
    return unravel(flat_x)


def _sqrt_eps(b) -> float:
    return float(np.sqrt(max(np.finfo(leaf.dtype).eps for leaf in jax.tree.leaves(b))))


def _pinv_solve(a, v, rcond=None):
    """``a⁺ v`` by the SVD, singular values below ``rcond · σ_max`` dropped."""
    rcond = 100 * max(a.shape) * float(jnp.finfo(a.dtype).eps) if rcond is None else rcond
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = s > rcond * s[0]
    return vt.T @ jnp.where(keep, (u.T @ v) / jnp.where(keep, s, 1.0), 0.0)


def _normal_backward_error(a, v, x):
    """Backward error of ``x`` as a least-squares solution of ``a x ≈ v`` (0 for an exact one)."""
    a_norm = jnp.linalg.norm(a)
    r = a @ x - v
    denominator = a_norm * (a_norm * jnp.linalg.norm(x) + jnp.linalg.norm(v))
    return jnp.linalg.norm(a.T @ r) / jnp.where(denominator > 0, denominator, 1.0)


def _lu_or_lstsq(matvec, b, on_failure):
    """LU, and the minimum-norm least-squares solution where LU fails (a singular ``A``:
    a non-finite result, or one whose size says ``cond(A) > 1e13``)."""
    flat_b, unravel = ravel_pytree(b)
    flat_matvec = lambda v: ravel_pytree(matvec(unravel(v)))[0]
    a = jax.vmap(flat_matvec, in_axes=1, out_axes=1)(jnp.eye(flat_b.size, dtype=flat_b.dtype))
    x_lu = jnp.linalg.solve(a, flat_b)
    a_norm, b_norm = jnp.linalg.norm(a), jnp.linalg.norm(flat_b)
    eps = float(jnp.finfo(flat_b.dtype).eps)
    # ||A|| ||x|| / ||b|| is a lower bound of cond(A): above ~1/(1000 eps) the LU answer is
    # dominated by rounding amplified along (near) null directions
    regular = jnp.all(jnp.isfinite(x_lu)) & (a_norm * jnp.linalg.norm(x_lu) * 1e3 * eps <= b_norm)
    flat_x = jax.lax.cond(regular, lambda: x_lu, lambda: _pinv_solve(a, flat_b))
    _report("solve_auto", _normal_backward_error(a, flat_b, flat_x), _sqrt_eps(b), on_failure,
            f"dense {flat_b.size}x{flat_b.size} system", measure="backward error")
    return unravel(flat_x)


def _gmres_lstsq(matvec, b, *, tol, atol=0.0, restart=50, maxiter=None):
    """Restarted GMRES whose small Hessenberg problems are solved by least squares (SVD), so
    that a singular ``A`` gives a least-squares solution instead of NaN (``jax.scipy``'s GMRES
    divides by a zero pivot at a breakdown). On a range-symmetric singular system
    (``N(A) = N(Aᵀ)``, e.g. the lasso's support systems) it converges to a least-squares
    solution for any ``b`` (Brown & Walker 1997). Flat vectors. Returns ``(x, n_restarts)``."""
    n = b.size
    m = min(restart, n)
    maxiter = 10 * n if maxiter is None else maxiter
    dtype = b.dtype
    eps = float(jnp.finfo(dtype).eps)
    target = jnp.maximum(tol * jnp.linalg.norm(b), atol)

    def small_lstsq(H, rhs):
        return _pinv_solve(H, rhs, rcond=10 * (m + 1) * eps)

    def cycle(x):
        r = b - matvec(x)
        beta = jnp.linalg.norm(r)
        V = jnp.zeros((m + 1, n), dtype).at[0].set(r / jnp.where(beta > 0, beta, 1.0))
        H = jnp.zeros((m + 1, m), dtype)
        rhs = jnp.zeros(m + 1, dtype).at[0].set(beta)

        # Givens rotations track the least-squares residual |g[k+1]| step by step (they stay
        # defined where the rotated Hessenberg is singular); the small problem itself is
        # solved once per cycle, by the SVD
        def cond(c):
            k, _, _, done, _, _, g = c
            return (k < m) & ~done & (jnp.abs(g[k]) > target)

        def body(c):
            k, V, H, done, cs, sn, g = c
            w = matvec(V[k])
            w_norm = jnp.linalg.norm(w)
            h = V @ w  # rows beyond k are zero
            w = w - V.T @ h
            h2 = V @ w  # classical Gram-Schmidt twice
            w = w - V.T @ h2
            h = h + h2
            hn = jnp.linalg.norm(w)
            breakdown = hn <= 10 * eps * w_norm  # the Krylov space is invariant
            hn = jnp.where(breakdown, 0.0, hn)
            V = V.at[k + 1].set(jnp.where(breakdown, 0.0, w / jnp.where(hn > 0, hn, 1.0)))
            h = h.at[k + 1].set(hn)
            H = H.at[:, k].set(h)

            def rotate(j, h):
                hj, hj1 = h[j], h[j + 1]
                return h.at[j].set(cs[j] * hj + sn[j] * hj1).at[j + 1].set(-sn[j] * hj + cs[j] * hj1)

            h = jax.lax.fori_loop(0, k, rotate, h)
            rho = jnp.hypot(h[k], h[k + 1])
            c_k = jnp.where(rho > 0, h[k] / jnp.where(rho > 0, rho, 1.0), 1.0)
            s_k = jnp.where(rho > 0, h[k + 1] / jnp.where(rho > 0, rho, 1.0), 0.0)
            g = g.at[k + 1].set(-s_k * g[k]).at[k].multiply(c_k)
            return k + 1, V, H, breakdown, cs.at[k].set(c_k), sn.at[k].set(s_k), g

        zeros = jnp.zeros(m, dtype)
        init = (0, V, H, jnp.asarray(False), zeros, zeros, rhs)
        _, V, H, done, _, _, _ = jax.lax.while_loop(cond, body, init)
        y = small_lstsq(H, rhs)
        x = x + V[:m].T @ y
        return x, beta, done

    # On an inconsistent system ||r|| levels off at its null-space part while the solution is
    # still converging on the range: progress (and convergence) is measured by ||A r|| too,
    # which vanishes exactly at a least-squares solution when N(A) = N(Aᵀ)
    ab_norm = jnp.linalg.norm(matvec(b))
    normal_target = tol * ab_norm

    def outer_cond(c):
        _, j, res, nres, stalled = c
        return (j < maxiter) & (res > target) & ~stalled

    def outer_body(c):
        x, j, res_old, nres_old, _ = c
        x_new, _, done = cycle(x)
        r = b - matvec(x_new)
        res, nres = jnp.linalg.norm(r), jnp.linalg.norm(matvec(r))
        # keep the cycle's x when it lowered ||r||, or left it flat (within 1e-6, rounding) and
        # lowered ||A r||: past a least-squares solution a cycle on the null-space residual can
        # keep ||r|| and blow up ||A r||. A cycle not kept would be repeated exactly: stop
        flat_r = res >= (1 - 1e-6) * res_old
        accept = ~flat_r | ((res <= (1 + 1e-6) * res_old) & (nres < nres_old))
        # stop on an invariant Krylov space (a breakdown: x is exact or least squares), on a
        # cycle that lowered neither ||r|| nor ||A r||, or once ||r|| stays put (the system is
        # inconsistent) and ||A r|| is at tol, or within the tolerance the final check accepts
        # (10 tol) and falling by less than half a cycle: the least-squares tail converges
        # slowly, and more cycles only polish. (A consistent system ends at ||r|| <= tol ||b||:
        # its ||A r|| can reach tol first where A has small eigenvalues.)
        stalled = (done | ~accept | (flat_r & (nres >= (1 - 1e-6) * nres_old))
                   | (flat_r & (nres <= normal_target))
                   | (flat_r & (nres <= 10 * normal_target) & (nres >= 0.5 * nres_old)))
        return (jnp.where(accept, x_new, x), j + 1, jnp.where(accept, res, res_old),
                jnp.where(accept, nres, nres_old), stalled)

    x0 = jnp.zeros_like(b)
    init = (x0, 0, jnp.linalg.norm(b), ab_norm, jnp.asarray(False))
    x, j, _, _, _ = jax.lax.while_loop(outer_cond, outer_body, init)
    return x, j


def _normal_residual(matvec, b, x):
    """``||Aᵀ(A x - b)|| / (||Aᵀ b|| or 1)``: zero at any least-squares solution."""
    rmatvec = lambda v: jax.linear_transpose(matvec, b)(v)[0]
    ref = tree_norm(rmatvec(b))
    return tree_norm(rmatvec(jax.tree.map(jnp.subtract, matvec(x), b))) / jnp.where(ref > 0, ref, 1.0)


def system_residual(matvec: Matvec, b, x, least_squares: bool = True) -> jax.Array:
    """:func:`relative_residual`, or, where that is above ``sqrt(eps)``, the smaller of it
    and the normal equations' ``||Aᵀ(Ax - b)|| / ||Aᵀb||``: small at an exact solution and
    at the least-squares one that :func:`solve_auto` returns for a singular, inconsistent
    system (a lasso support with collinear columns).

    ``least_squares=False`` (``x`` from a solve that never returns a least-squares
    solution: :func:`returns_least_squares` says which): only the relative residual; the
    normal equations' branch costs three more products with ``A`` or ``Aᵀ`` in the
    compiled program, whose size is its load time from the persistent cache.

    Example:
      >>> system_residual(lambda v: A @ v, b, solve_auto(lambda v: A @ v, b))
    """
    rel = relative_residual(matvec, b, x)
    if not least_squares:
        return rel
    bar = float(np.sqrt(np.finfo(rel.dtype).eps))
    return jax.lax.cond(rel <= bar, lambda: rel, lambda: jnp.minimum(rel, _normal_residual(matvec, b, x)))


def returns_least_squares(solve) -> bool:
    """Whether ``solve`` may return a least-squares (not exact) solution of a singular
    system: :func:`solve_auto`, :func:`solve_lstsq`, :func:`solve_normal_cg`, any solve
    given a ``ridge`` (it solves ``A + r I``: on a singular ``A``, close to the minimum-norm
    least-squares solution), and any solve this library does not know (``functools.partial``
    of one is looked through).

    Example:
      >>> returns_least_squares(solve_cg), returns_least_squares(solve_auto)
      (False, True)
      >>> returns_least_squares(functools.partial(solve_gmres, ridge=1e-6))
      True
    """
    while isinstance(solve, functools.partial):
        if solve.keywords.get("ridge"):
            return True
        solve = solve.func
    return solve not in _EXACT_SOLVES


def _gmres_or_lstsq(matvec, b, *, tol, maxiter, on_failure):
    """Restarted GMRES(50) with least-squares Hessenberg solves (:func:`_gmres_lstsq`): on a
    nonsingular ``A`` the GMRES answer; on a singular, range-symmetric one a least-squares
    solution. It stops at ``tol``; once ``||r||`` stops falling (an inconsistent system),
    where ``||A r||`` (zero at a least-squares solution) is at ``tol``, or within ``10 tol``
    and falling slowly; after a cycle that improved neither; or after ``maxiter`` cycles
    (default: at most ``10 size(b)`` products, as :func:`solve_gmres`).

    ``jax.scipy``'s GMRES, run first until 2026-12, stagnates on such a system without
    detecting it and runs to its default of ``10 size(b)`` restarts (``500 size(b)``
    products): a 5-fold CV lasso of text data never finished a step."""
    _check_positive("tol", tol)
    _check_positive("maxiter", maxiter, "a positive integer or None")
    tol = _default_tol(b) if tol is None else tol
    matvec, b, _, back = _common_dtype(matvec, b, None)
    flat_b, unravel = ravel_pytree(b)
    flat_mv = lambda v: ravel_pytree(matvec(unravel(v)))[0]
    restart = 50
    cycles = maxiter if maxiter is not None else max(1, -(-10 * flat_b.size // restart))
    flat_x, _ = _gmres_lstsq(flat_mv, flat_b, tol=tol, restart=restart, maxiter=cycles)
    x = unravel(flat_x)
    residual = relative_residual(matvec, b, x)
    # a singular, inconsistent system has no exact solution: a least-squares one is checked
    # by its normal equations' residual
    measure = jnp.where(residual <= 10 * tol, residual,
                        jnp.minimum(residual, _normal_residual(matvec, b, x)))
    maxiter_txt = maxiter if maxiter is not None else f"default {cycles}"
    _report("solve_auto", measure, 10 * tol, on_failure,
            f"GMRES(50), tol={tol:g}, restarts={maxiter_txt}")
    return back(x)


def solve_auto(matvec: Matvec, b, *, dense_threshold: int = 600, tol: float | None = None,
               maxiter: int | None = None, on_failure: str = "warn"):
    """The library's default: exact dense LU for small systems, GMRES for large ones, and
    the minimum-norm (least-squares) solution where ``A`` is singular.

    With ``size(b) <= dense_threshold`` (decided at trace time), LU (as :func:`solve_lu`);
    otherwise restarted GMRES(50) with a tight default tolerance (1e-10 in float64) and at
    most ``10 size(b)`` products by default (``maxiter``: restart cycles). Neither assumes
    symmetry, so it serves minimization (Hessian) and fixed-point (``I - ∂T``) systems
    alike. The threshold is measured (``experiments/bench_inner_solvers.py --only linear``,
    ridge Hessians with condition numbers 34 and 1e3, one CPU thread): GMRES was slower than
    LU up to 400 unknowns and faster from 800 on (at 1600: 0.5 s vs 1-3 s); CG, where the
    system is symmetric, wins from ~100.

    **Singular systems.** A lasso whose support holds collinear columns (duplicated or
    rare columns of text data, nonzero in the same training rows) has a singular implicit
    system, on which LU and ``jax.scipy``'s GMRES give NaN. Where LU fails (a non-finite
    result, or one whose size says ``cond(A) > 1e13``) the dense path takes the SVD
    pseudo-inverse (:func:`solve_lstsq`). The large path's GMRES solves its small Hessenberg
    problems by least squares (SVD): on a nonsingular ``A`` that is GMRES, on a
    range-symmetric singular one such as the lasso's it converges to a least-squares
    solution; it stops at ``tol``, or, once ``||r||`` stops falling, where ``||A r||`` (zero
    at a least-squares solution) is ``tol`` times ``||A b||``, or after a restart cycle that
    lowered neither ``||r||`` nor ``||A r||``. Either path gives the hypergradient of the
    minimum-norm solution path (``dw/dλ = -H_SS⁺ sign(w_S)`` on the lasso's support); the
    failure check is then on the normal equations. (Until 2026-12 the large path ran
    ``jax.scipy``'s GMRES first, which stagnates on such systems without noticing, and under
    ``vmap`` both branches always ran.)

    Example:
      >>> A = jnp.array([[1.0, 1.0], [1.0, 1.0]])          # singular
      >>> x = solve_auto(lambda v: A @ v, jnp.array([2.0, 2.0]))   # [1., 1.]
    """
    if _size(b) <= dense_threshold:
        return _lu_or_lstsq(matvec, b, on_failure=on_failure)
    return _gmres_or_lstsq(matvec, b, tol=tol, maxiter=maxiter, on_failure=on_failure)


# Solves whose answer is an exact solution or a reported failure, never a least-squares one.
_EXACT_SOLVES = frozenset({solve_cg, solve_bicgstab, solve_gmres, solve_cholesky, solve_lu,
                           solve_qr, solve_inv})
