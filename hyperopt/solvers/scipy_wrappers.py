"""SciPy's minimizers, root finders and least squares as differentiable solvers.

Same names and arguments as JAXopt's ``ScipyMinimize``, ``ScipyBoundedMinimize``,
``ScipyRootFinding``, ``ScipyLeastSquares`` and ``ScipyBoundedLeastSquares``. SciPy runs
on the host inside :func:`jax.pure_callback`, calling back into compiled JAX functions for
values and gradients, so that ``run`` works under ``jit`` and ``vmap`` (one SciPy run
per batch element) where JAXopt's runs only eagerly. Derivatives come from the implicit
function theorem (``custom_root`` on the optimality condition, through
:class:`~hyperopt.solvers.base.IterativeSolver`'s ``run``): SciPy's iterations cannot be
unrolled, so ``implicit_diff=False`` is refused.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from hyperopt.linear_solve import solve_cg
from hyperopt.prox import projection_box
from hyperopt.solvers.base import IterativeSolver
from hyperopt.solvers.optax_solver import make_value_and_grad_with_aux
from hyperopt.tree_util import partition_static, tree_norm

__all__ = [
    "ScipyBoundedLeastSquares", "ScipyBoundedMinimize", "ScipyLeastSquares",
    "ScipyLeastSquaresInfo", "ScipyMinimize", "ScipyMinimizeInfo", "ScipyRootFinding",
    "ScipyRootInfo",
]


class ScipyMinimizeInfo(NamedTuple):
    """What :class:`ScipyMinimize` returns as ``state`` (JAXopt's fields, then hyperopt's).

    ``hess_inv``: SciPy's inverse Hessian estimate as a dense ``(n, n)`` array for BFGS
    and for L-BFGS-B with ``n <= 2048`` (JAXopt: an ``LbfgsInvHessProduct`` operator),
    else None. ``error``: the gradient norm at the solution; ``converged``: ``success``.
    """

    fun_val: jax.Array
    success: jax.Array
    status: jax.Array
    iter_num: jax.Array
    hess_inv: jax.Array | None
    num_fun_eval: jax.Array
    num_jac_eval: jax.Array
    num_hess_eval: jax.Array
    error: jax.Array
    converged: jax.Array


class ScipyRootInfo(NamedTuple):
    """``state`` of :class:`ScipyRootFinding`; ``fun_val`` is flat, shape ``(n,)``;
    ``iter_num`` and ``num_fun_eval`` are -1 where the method does not report them
    (JAXopt: None); ``error``: ``||fun_val||``."""

    fun_val: jax.Array
    success: jax.Array
    status: jax.Array
    iter_num: jax.Array
    num_fun_eval: jax.Array
    error: jax.Array
    converged: jax.Array


class ScipyLeastSquaresInfo(NamedTuple):
    """``state`` of :class:`ScipyLeastSquares`; ``fun_val``: the flat residuals ``(m,)``;
    ``error``: SciPy's first-order optimality; ``num_jac_eval`` -1 where not reported."""

    cost_val: jax.Array
    fun_val: jax.Array
    success: jax.Array
    status: jax.Array
    num_fun_eval: jax.Array
    num_jac_eval: jax.Array
    error: jax.Array
    converged: jax.Array


# -- pytrees <-> SciPy's flat float64 vectors ---------------------------------------------


class _Flat(NamedTuple):
    """Flattens a pytree like ``example`` to one vector and back (JAXopt's PyTreeTopology)."""

    treedef: Any
    shapes: tuple
    dtypes: tuple

    @classmethod
    def of(cls, example) -> _Flat:
        leaves, treedef = jax.tree.flatten(example)
        return cls(treedef, tuple(jnp.shape(x) for x in leaves),
                   tuple(jnp.result_type(x) for x in leaves))

    @property
    def size(self) -> int:
        return int(sum(np.prod(s, dtype=int) for s in self.shapes))

    @property
    def dtype(self):
        return jnp.result_type(*self.dtypes) if self.dtypes else jnp.result_type(float)

    def flatten(self, tree, dtype=np.float64) -> np.ndarray:
        return np.concatenate([np.asarray(x, dtype).reshape(-1) for x in jax.tree.leaves(tree)]
                              or [np.zeros(0, dtype)])

    def unflatten(self, flat, as_numpy: bool = False):
        cut = np.cumsum([int(np.prod(s, dtype=int)) for s in self.shapes])[:-1]
        pieces = np.split(np.asarray(flat), cut) if self.shapes else []
        conv = np.asarray if as_numpy else jnp.asarray
        return jax.tree.unflatten(self.treedef, [conv(p.reshape(s), d) for p, s, d in
                                                 zip(pieces, self.shapes, self.dtypes, strict=True)])

    def unflatten_traced(self, flat):
        """``unflatten`` for a traced vector (inside ``jit``)."""
        cut = np.cumsum([int(np.prod(s, dtype=int)) for s in self.shapes])[:-1]
        pieces = jnp.split(flat, cut) if self.shapes else []
        return jax.tree.unflatten(self.treedef, [p.reshape(s).astype(d) for p, s, d in
                                                 zip(pieces, self.shapes, self.dtypes, strict=True)])

    def flatten_jacobian(self, jac, inputs: _Flat, dtype=np.float64) -> np.ndarray:
        """The Jacobian pytree (``jax.jacrev`` of a map from ``inputs``-like to ``self``-like
        pytrees) as a ``(self.size, inputs.size)`` matrix."""
        leaves = jax.tree.leaves(jac)
        n_in = len(inputs.shapes)
        blocks = [[np.asarray(leaves[i * n_in + j], dtype).reshape(
            int(np.prod(so, dtype=int)), int(np.prod(si, dtype=int)))
            for j, si in enumerate(inputs.shapes)] for i, so in enumerate(self.shapes)]
        return np.block(blocks)


def _int(x) -> np.ndarray:
    return np.asarray(-1 if x is None else x, np.int32)


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class _ScipySolver(IterativeSolver):
    """Shared options. ``method``: SciPy's; ``dtype``: what SciPy computes in (float64;
    L-BFGS-B's Fortran code needs it); ``jit``: compile ``run`` and the value/gradient
    functions SciPy calls; ``has_aux``: the user function returns ``(main, aux)``."""

    default_linear_solve = staticmethod(solve_cg)

    method: str | None = None
    dtype: Any = np.float64
    has_aux: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not self.implicit_diff:
            raise ValueError(f"implicit_diff={self.implicit_diff!r}; allowed: True (SciPy's "
                             "iterations run on the host and cannot be unrolled)")

    def _compiled(self, fun: Callable) -> Callable:
        return jax.jit(fun) if self.jit else fun

    def _host_call(self, host: Callable, result_shape, init_params, args, kwargs):
        """``host(x0_flat, args, kwargs)`` on NumPy values, through ``pure_callback``."""
        dyn, _, rebuild = partition_static((args, kwargs))
        flat = _Flat.of(init_params)
        x0 = jnp.concatenate([jnp.ravel(x).astype(flat.dtype) for x in jax.tree.leaves(init_params)]
                             or [jnp.zeros(0, flat.dtype)])

        def callback(x0, dyn):
            a, k = rebuild([np.asarray(d) for d in dyn])
            return host(np.asarray(x0, self.dtype), a, k)

        return jax.pure_callback(callback, result_shape, x0, dyn, vmap_method="sequential")


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class ScipyMinimize(_ScipySolver):
    """``scipy.optimize.minimize`` of ``fun(params, *args, **kwargs)`` over a pytree.

    ``run(init_params, *args, **kwargs) -> OptStep(params, ScipyMinimizeInfo)``; derivatives
    by implicit differentiation of ``∇ₓ fun(x*) = 0`` (accurate when SciPy converged: set
    ``tol`` tight).

    Attributes:
      fun: the objective (``(value, aux)`` if ``has_aux``; ``(value, grad)`` if
        ``value_and_grad=True``; or give ``value_and_grad`` as a function).
      method: e.g. ``"BFGS"``, ``"L-BFGS-B"``, ``"CG"``, ``"Newton-CG"``, ``"trust-ncg"``
        (default: SciPy's choice).
      tol, options: SciPy's; ``maxiter`` (500) goes into ``options`` (giving it there too is
        a ``ValueError``, as in JAXopt).
      callback: ``callback(params)`` after each SciPy iteration, with a pytree like
        ``init_params``.

    Example:
      >>> solver = ScipyMinimize(fun=ridge_objective, method="L-BFGS-B", tol=1e-12)
      >>> w = solver.run(jnp.zeros(p), lam, X, y).params
      >>> jax.grad(lambda lam: val_loss(solver.run(w0, lam, X, y).params))(lam)
    """

    fun: Callable
    callback: Callable | None = None
    tol: float | None = None
    options: dict | None = None
    maxiter: int = 500
    value_and_grad: bool | Callable = False

    def __post_init__(self):
        super().__post_init__()
        if self.options and "maxiter" in self.options:
            raise ValueError(f"options={self.options!r} holds maxiter; allowed: pass maxiter= "
                             "to the solver instead")

    @functools.cached_property
    def _value_and_grad_fun(self) -> Callable:
        return self._compiled(make_value_and_grad_with_aux(self.fun, self.value_and_grad,
                                                           self.has_aux))

    def optimality_fun(self, params, *args, **kwargs):
        return self._value_and_grad_fun(params, *args, **kwargs)[1]

    def _reference_signature(self):
        return None if self.value_and_grad not in (False, True) else self.fun

    def _scipy_bounds(self, bounds, flat: _Flat):
        if bounds is None:
            return None
        return scipy.optimize.Bounds(lb=flat.flatten(bounds[0], self.dtype),
                                     ub=flat.flatten(bounds[1], self.dtype))

    def _method(self, bounds) -> str:
        return (self.method or ("L-BFGS-B" if bounds is not None else "BFGS")).lower()

    def _minimize(self, init_params, bounds, args, kwargs):
        flat = _Flat.of(init_params)
        n, dtype = flat.size, flat.dtype
        method = self._method(bounds)
        hess = "dense" if method == "bfgs" or (method == "l-bfgs-b" and n <= 2048) else None
        value_and_grad = self._value_and_grad_fun

        def host(x0, a, k):
            host_bounds, a = a[0], a[1:]

            def scipy_fun(x):
                (value, _), grad = value_and_grad(flat.unflatten(x), *a, **k)
                return np.asarray(value, self.dtype), flat.flatten(grad, self.dtype)
            callback = None if self.callback is None else (
                lambda xk: self.callback(flat.unflatten(xk)))
            res = scipy.optimize.minimize(
                scipy_fun, x0, jac=True, tol=self.tol, method=self.method,
                bounds=self._scipy_bounds(host_bounds, flat), callback=callback,
                options={**(self.options or {}), "maxiter": self.maxiter})
            out = [np.asarray(res.x, dtype), np.asarray(res.fun, dtype), np.asarray(res.success),
                   _int(res.status), _int(getattr(res, "nit", None)),
                   _int(getattr(res, "nfev", 0)), _int(getattr(res, "njev", 0)),
                   _int(getattr(res, "nhev", 0))]
            if hess is not None:
                h = res.hess_inv
                out.append(np.asarray(h.todense() if hasattr(h, "todense") else h, dtype))
            return tuple(out)

        shapes = [jax.ShapeDtypeStruct((n,), dtype), jax.ShapeDtypeStruct((), dtype),
                  jax.ShapeDtypeStruct((), jnp.bool_)] + [jax.ShapeDtypeStruct((), jnp.int32)] * 5
        if hess is not None:
            shapes.append(jax.ShapeDtypeStruct((n, n), dtype))
        out = self._host_call(host, tuple(shapes), init_params, (bounds, *args), kwargs)
        hess_inv = out[8] if hess is not None else None
        return flat.unflatten_traced(out[0]), (*out[1:8], hess_inv)

    def _run_iterations(self, init_params, *args, **kwargs):
        params, (fun_val, success, status, nit, nfev, njev, nhev, hess_inv) = self._minimize(
            init_params, None, args, kwargs)
        error = tree_norm(self.optimality_fun(params, *args, **kwargs))
        return params, ScipyMinimizeInfo(fun_val, success, status, nit, hess_inv, nfev, njev,
                                         nhev, error, success)


def _box_fixed_point_residual(grad, params, bounds):
    """``P_box(x - ∇) - x``: zero exactly at a box-constrained stationary point."""
    step = jax.tree.map(jnp.subtract, params, grad)
    return jax.tree.map(jnp.subtract, projection_box(step, bounds), params)


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class ScipyBoundedMinimize(ScipyMinimize):
    """``scipy.optimize.minimize`` under box constraints ``lower <= params <= upper``.

    ``run(init_params, bounds, *args, **kwargs)`` with ``bounds = (lower, upper)``, pytrees
    like ``init_params`` (or None). Implicit differentiation uses the fixed point
    ``x = P_box(x - ∇f(x))``, so derivatives with respect to the bounds are exact where
    they are active.

    Example:
      >>> solver = ScipyBoundedMinimize(fun=least_squares, method="L-BFGS-B")
      >>> w = solver.run(w0, (-jnp.ones(p), jnp.ones(p)), (X, y)).params
    """

    # the box fixed point's Jacobian is not symmetric: not CG
    default_linear_solve = staticmethod(IterativeSolver.default_linear_solve)

    def optimality_fun(self, params, bounds, *args, **kwargs):
        grad = self._value_and_grad_fun(params, *args, **kwargs)[1]
        if bounds is None:
            return grad
        return _box_fixed_point_residual(grad, params, bounds)

    def _reference_signature(self):
        return lambda params, bounds, *args, **kwargs: None

    def _run_iterations(self, init_params, bounds, *args, **kwargs):
        params, (fun_val, success, status, nit, nfev, njev, nhev, hess_inv) = self._minimize(
            init_params, bounds, args, kwargs)
        error = tree_norm(self.optimality_fun(params, bounds, *args, **kwargs))
        return params, ScipyMinimizeInfo(fun_val, success, status, nit, hess_inv, nfev, njev,
                                         nhev, error, success)


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class ScipyRootFinding(_ScipySolver):
    """``scipy.optimize.root`` of ``optimality_fun(params, *args, **kwargs)`` (a pytree like
    ``params``), with its Jacobian from JAX.

    ``run(init_params, *args, **kwargs) -> OptStep(params, ScipyRootInfo)``; derivatives by
    the implicit function theorem on ``optimality_fun(x*) = 0``.

    Attributes:
      optimality_fun: the function whose root is sought (``(F, aux)`` if ``has_aux``).
      method: ``"hybr"`` (SciPy's default), ``"lm"``, ``"broyden1"``, ``"krylov"``, ...
      tol, options: SciPy's.
      use_jacrev: Jacobian by ``jax.jacrev`` (True) or ``jax.jacfwd`` (False).

    Example:
      >>> root = ScipyRootFinding(optimality_fun=lambda x, b: A @ x - b, method="hybr")
      >>> x = root.run(jnp.zeros(n), b).params                      # A⁻¹ b
    """

    default_linear_solve = staticmethod(IterativeSolver.default_linear_solve)  # not symmetric

    # field() so that the base class's optimality_fun method is not taken as its default
    optimality_fun: Callable = dataclasses.field()
    tol: float | None = None
    options: dict | None = None
    use_jacrev: bool = True

    def _value(self, params, /, *args, **kwargs):
        out = self.optimality_fun(params, *args, **kwargs)
        return out[0] if self.has_aux else out

    def _implicit_optimality(self) -> Callable:
        return self._value

    def _reference_signature(self):
        return self.optimality_fun

    def _run_iterations(self, init_params, *args, **kwargs):
        flat = _Flat.of(init_params)
        n, dtype = flat.size, flat.dtype
        value = self._compiled(self._value)
        jac = self._compiled((jax.jacrev if self.use_jacrev else jax.jacfwd)(self._value))

        def host(x0, a, k):
            def scipy_fun(x):
                params = flat.unflatten(x)
                return (flat.flatten(value(params, *a, **k), self.dtype),
                        flat.flatten_jacobian(jac(params, *a, **k), flat, self.dtype))
            res = scipy.optimize.root(scipy_fun, x0, jac=True, tol=self.tol, method=self.method,
                                      options=self.options)
            return (np.asarray(res.x, dtype), np.asarray(res.fun, dtype).reshape(n),
                    np.asarray(res.success), _int(res.status), _int(getattr(res, "nit", None)),
                    _int(getattr(res, "nfev", None)))

        shapes = (jax.ShapeDtypeStruct((n,), dtype), jax.ShapeDtypeStruct((n,), dtype),
                  jax.ShapeDtypeStruct((), jnp.bool_), jax.ShapeDtypeStruct((), jnp.int32),
                  jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))
        x, fun_val, success, status, nit, nfev = self._host_call(host, shapes, init_params,
                                                                  args, kwargs)
        return flat.unflatten_traced(x), ScipyRootInfo(fun_val, success, status, nit, nfev,
                                                       jnp.linalg.norm(fun_val), success)


# ρ(z) of SciPy's robust losses, applied to z = (r / f_scale)²
_LS_RHO = {
    "linear": lambda z: z,
    "soft_l1": lambda z: 2.0 * (jnp.sqrt(1 + z) - 1),
    # sqrt only where it is taken: its infinite derivative at z = 0 (a zero residual) would
    # otherwise turn the gradient of the unused branch into NaN through where
    "huber": lambda z: jnp.where(z <= 1, z, 2.0 * jnp.sqrt(jnp.where(z <= 1, 1.0, z)) - 1),
    "cauchy": jnp.log1p,
    "arctan": jnp.arctan,
}
_LS_DEFAULT_OPTIONS = {"ftol": 1e-8, "xtol": 1e-8, "gtol": 1e-8, "x_scale": 1.0, "f_scale": 1.0,
                       "tr_solver": None, "tr_options": {}, "max_nfev": None}


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class ScipyLeastSquares(_ScipySolver):
    """``scipy.optimize.least_squares``: minimizes ``0.5 Σ ρ(fun(x, *args, **kwargs)²)``.

    ``fun`` returns the residuals (a pytree); ``run(init_params, *args, **kwargs) ->
    OptStep(params, ScipyLeastSquaresInfo)``. Implicit differentiation uses the gradient
    of the same robust cost, ``∇ₓ Σ f_scale² ρ((r/f_scale)²) = 0``.

    Attributes:
      fun: residuals ``r(x, *args, **kwargs)`` (``(r, aux)`` if ``has_aux``).
      loss: ``"linear"``, ``"soft_l1"``, ``"huber"``, ``"cauchy"`` or ``"arctan"``.
      method: ``"trf"`` (SciPy's default), ``"dogbox"`` or ``"lm"``.
      options: further keywords of ``least_squares`` (``f_scale``, ``ftol``, ``xtol``,
        ``gtol``, ``x_scale``, ``max_nfev``, ...; JAXopt's defaults: tolerances 1e-8).
      use_jacrev: Jacobian by ``jax.jacrev`` (True) or ``jax.jacfwd`` (False).

    Example:
      >>> lsq = ScipyLeastSquares(fun=lambda w, x, y: model(w, x) - y, loss="huber")
      >>> w = lsq.run(w0, x, y).params
    """

    fun: Callable
    loss: str = "linear"
    options: dict | None = None
    use_jacrev: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in _LS_RHO:
            raise ValueError(f"loss={self.loss!r}; allowed: {', '.join(_LS_RHO)}")

    @property
    def _options(self) -> dict:
        return {**_LS_DEFAULT_OPTIONS, **(self.options or {})}

    def _residuals(self, params, /, *args, **kwargs):
        out = self.fun(params, *args, **kwargs)
        return out[0] if self.has_aux else out

    def _cost(self, params, *args, **kwargs):
        f_scale = self._options["f_scale"]
        r = jnp.concatenate([jnp.ravel(x) for x in
                             jax.tree.leaves(self._residuals(params, *args, **kwargs))])
        return 0.5 * f_scale ** 2 * jnp.sum(_LS_RHO[self.loss]((r / f_scale) ** 2))

    def optimality_fun(self, params, *args, **kwargs):
        return jax.grad(self._cost)(params, *args, **kwargs)

    def _reference_signature(self):
        return self.fun

    def _least_squares(self, init_params, bounds, args, kwargs):
        flat = _Flat.of(init_params)
        out_flat = _Flat.of(jax.eval_shape(self._residuals, init_params, *args, **kwargs))
        n, m, dtype = flat.size, out_flat.size, flat.dtype
        residuals = self._compiled(self._residuals)
        jac = self._compiled((jax.jacrev if self.use_jacrev else jax.jacfwd)(self._residuals))
        options = dict(self._options)

        def host(x0, a, k):
            host_bounds, a = a[0], a[1:]
            lsq_bounds = (-np.inf, np.inf) if host_bounds is None else (
                flat.flatten(host_bounds[0], self.dtype), flat.flatten(host_bounds[1], self.dtype))
            if not (isinstance(options["x_scale"], (float, str))):
                options["x_scale"] = flat.flatten(options["x_scale"], self.dtype)
            res = scipy.optimize.least_squares(
                lambda x: out_flat.flatten(residuals(flat.unflatten(x), *a, **k), self.dtype),
                x0, jac=lambda x: out_flat.flatten_jacobian(jac(flat.unflatten(x), *a, **k),
                                                            flat, self.dtype),
                bounds=lsq_bounds, method=self.method or "trf", loss=self.loss, **options)
            return (np.asarray(res.x, dtype), np.asarray(res.cost, dtype),
                    np.asarray(res.fun, dtype).reshape(m), np.asarray(res.success),
                    _int(res.status), _int(res.nfev), _int(res.njev),
                    np.asarray(res.optimality, dtype))

        shapes = (jax.ShapeDtypeStruct((n,), dtype), jax.ShapeDtypeStruct((), dtype),
                  jax.ShapeDtypeStruct((m,), dtype), jax.ShapeDtypeStruct((), jnp.bool_),
                  jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32),
                  jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), dtype))
        x, cost, fun_val, success, status, nfev, njev, optimality = self._host_call(
            host, shapes, init_params, (bounds, *args), kwargs)
        return flat.unflatten_traced(x), ScipyLeastSquaresInfo(
            cost, fun_val, success, status, nfev, njev, optimality, success)

    def _run_iterations(self, init_params, *args, **kwargs):
        return self._least_squares(init_params, None, args, kwargs)


@dataclasses.dataclass(eq=False, frozen=True, kw_only=True)
class ScipyBoundedLeastSquares(ScipyLeastSquares):
    """:class:`ScipyLeastSquares` under box constraints: ``run(init_params, bounds, *args,
    **kwargs)``, ``bounds = (lower, upper)`` pytrees like ``init_params``. Implicit
    differentiation uses ``x = P_box(x - ∇cost(x))``.

    Example:
      >>> lsq = ScipyBoundedLeastSquares(fun=residuals, loss="soft_l1")
      >>> w = lsq.run(w0, (lower, upper), x, y).params
    """

    # the box fixed point's Jacobian is not symmetric: not CG
    default_linear_solve = staticmethod(IterativeSolver.default_linear_solve)

    def optimality_fun(self, params, bounds, *args, **kwargs):
        grad = jax.grad(self._cost)(params, *args, **kwargs)
        if bounds is None:
            return grad
        return _box_fixed_point_residual(grad, params, bounds)

    def _reference_signature(self):
        return lambda params, bounds, *args, **kwargs: None

    def _run_iterations(self, init_params, bounds, *args, **kwargs):
        return self._least_squares(init_params, bounds, args, kwargs)
