"""Argmin differentiation by the implicit function theorem.

If ``x*(θ)`` solves ``F(x, θ) = 0`` (an optimality condition such as ``∇f(x, θ) = 0``,
or ``T(x, θ) - x = 0`` for a fixed point), then ``∂F/∂x · dx* = -∂F/∂θ · dθ``: the
derivative of the solution needs one linear solve with ``A = ∂F/∂x`` at the solution,
never the solver's iterations.

:func:`custom_root` and :func:`custom_fixed_point` attach this rule to any solver as a
custom JVP whose linear solve goes through :func:`jax.lax.custom_linear_solve`. JAX
transposes that rule for reverse mode, so ``jvp``, ``jacfwd``, ``grad``, ``jacrev`` and
``hessian`` all work, under ``jit`` and ``vmap``. Arrays that the optimality function or
the solver close over (rather than take as arguments) are hoisted with
:func:`jax.closure_convert` and differentiated correctly.

:func:`root_jvp` and :func:`root_vjp` are the low-level products.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from hyperopt.linear_solve import returns_least_squares, solve_auto, system_residual
from hyperopt.tree_util import partition_static

__all__ = ["custom_fixed_point", "custom_root", "root_jvp", "root_vjp"]

LinearSolve = Callable[..., Any]


# ---------------------------------------------------------------------------------------
# Low-level products
# ---------------------------------------------------------------------------------------


def _linear_solve(matvec, b, solve, symmetric=False):
    """``A⁻¹ b`` through ``custom_linear_solve`` so that it is differentiable and transposable.

    A pytree ``b`` of several leaves is solved as one flat vector: when some leaf of ``b``
    does not depend on the tangents (a structurally zero block of ``∂₂F · dθ``, e.g. the
    intercept of a logistic model under an L2 penalty on the weights), JAX cannot transpose
    ``custom_linear_solve`` with a constant operand; the concatenation is linear as a whole.
    """
    if len(jax.tree_util.tree_leaves(b)) > 1:
        flat, unravel = ravel_pytree(b)
        flat_matvec = lambda v: ravel_pytree(matvec(unravel(v)))[0]
        x = jax.lax.custom_linear_solve(
            flat_matvec, flat, solve=lambda mv, v: ravel_pytree(solve(
                lambda u: unravel(mv(ravel_pytree(u)[0])), unravel(v)))[0],
            transpose_solve=lambda vm, v: ravel_pytree(solve(
                lambda u: unravel(vm(ravel_pytree(u)[0])), unravel(v)))[0],
            symmetric=symmetric)
        return unravel(x)
    return jax.lax.custom_linear_solve(
        matvec, b, solve=lambda mv, v: solve(mv, v), transpose_solve=lambda vm, v: solve(vm, v),
        symmetric=symmetric)


def root_jvp(optimality_fun: Callable, sol, args: tuple, tangents: tuple,
             solve: LinearSolve | None = None, return_residual: bool = False):
    """Jacobian-vector product of a root: ``∂x*(θ) · dθ``.

    Solves ``∂₁F(x*, θ) · dx = -∂₂F(x*, θ) · dθ``.

    Args:
      optimality_fun: ``F(x, *args)``, zero at the root; its output has the structure of ``x``.
      sol: the root ``x*`` (a pytree).
      args: tuple of the arguments ``θ`` of ``F`` after ``x``.
      tangents: tuple like ``args`` holding the direction ``dθ``.
      solve: linear solver ``solve(matvec, b) -> x`` (default :func:`solve_auto`).
      return_residual: also return ``||A dx - b|| / ||b||`` of the linear system (or, when
        that is not small, its normal equations' residual where smaller:
        :func:`~hyperopt.linear_solve.system_residual`).

    Returns:
      ``dx`` (a pytree like ``sol``), or ``(dx, residual)``.

    Example:
      >>> F = lambda x, lam: (X.T @ (X @ x - y)) / n + lam * x
      >>> dx = root_jvp(F, w_star, (lam,), (1.0,))   # d w*/d lam
    """
    solve = solve_auto if solve is None else solve
    _, rhs = jax.jvp(lambda *a: optimality_fun(sol, *a), tuple(args), tuple(tangents))
    rhs = jax.tree.map(jnp.negative, rhs)
    # linearized once: the primal part of F (e.g. the softmax of a logistic model) is not
    # recomputed at every matvec of an iterative solve
    matvec = jax.linearize(lambda x: optimality_fun(x, *args), sol)[1]
    dx = _linear_solve(matvec, rhs, solve)  # several leaves: one flat system (see there)
    if return_residual:
        return dx, system_residual(matvec, rhs, dx, returns_least_squares(solve))
    return dx


def _negate(g):
    return g if g.dtype == jax.dtypes.float0 else -g  # integer arguments have float0 cotangents


def root_vjp(optimality_fun: Callable, sol, args: tuple, cotangent,
             solve: LinearSolve | None = None, return_residual: bool = False):
    """Vector-Jacobian product of a root: ``vᵀ ∂x*(θ)`` for every argument.

    Solves ``∂₁F(x*, θ)ᵀ u = v`` and returns ``-∂₂F(x*, θ)ᵀ u``.

    Args:
      optimality_fun: ``F(x, *args)``, zero at the root.
      sol: the root ``x*``.
      args: tuple of the arguments ``θ`` of ``F`` after ``x``.
      cotangent: ``v``, a pytree like ``sol`` (e.g. ``∇ₓ L(x*)`` of an outer loss).
      solve: linear solver ``solve(matvec, b) -> x`` (default :func:`solve_auto`).
      return_residual: also return ``||Aᵀu - v|| / ||v||`` of the linear system (or its
        normal equations' residual: :func:`~hyperopt.linear_solve.system_residual`).

    Returns:
      A tuple like ``args`` with ``vᵀ ∂x*/∂θᵢ`` for each argument, or ``(that, residual)``.

    Example:
      >>> (g_lam,) = root_vjp(F, w_star, (lam,), grad_outer_wrt_w)   # hypergradient
    """
    solve = solve_auto if solve is None else solve
    _, vjp_x = jax.vjp(lambda x: optimality_fun(x, *args), sol)
    matvec_t = lambda u: vjp_x(u)[0]
    u = _linear_solve(matvec_t, cotangent, solve)
    _, vjp_args = jax.vjp(lambda *a: optimality_fun(sol, *a), *args)
    out = tuple(jax.tree.map(_negate, g) for g in vjp_args(u))
    if return_residual:
        return out, system_residual(matvec_t, cotangent, u, returns_least_squares(solve))
    return out


# ---------------------------------------------------------------------------------------
# Decorators
# ---------------------------------------------------------------------------------------


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def _check_call(signature: inspect.Signature, args, kwargs, name: str) -> None:
    """Fails early, with the signature in the message, when the call cannot bind to it.

    The call itself keeps the caller's positional/keyword split: keyword arguments travel
    as a dict, whose pytree flattening is sorted by key, so their order never matters.
    """
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as e:
        raise TypeError(f"arguments {args!r}/{sorted(kwargs)} do not match the signature "
                        f"{signature} of {name}: {e}") from None


def _signature_or_none(fun) -> inspect.Signature | None:
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError):
        return None


def _binds(signature: inspect.Signature, args, kwargs) -> bool:
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError:
        return False
    return True


def _optimality_call_split(reference: inspect.Signature, own: inspect.Signature | None,
                           args, kwargs) -> tuple[tuple, dict]:
    """How the optimality function is called: the arguments bound to the reference
    signature and passed positionally as far as it allows (JAXopt's rule: a
    ``fixed_point_fun`` written ``lambda x, *args`` with the reference signature
    ``(x, lam, X, y)`` works when the solver is called as ``solver(x0, lam=lam, X=X,
    y=y)``), unless the function's own signature does not take that split (e.g.
    ``optimality(x, **kw)``), which then gets the caller's split unchanged."""
    bound = reference.bind(None, *args, **kwargs)
    split = bound.args[1:], bound.kwargs
    if own is None or _binds(own, *split):
        return split
    return args, kwargs


def _implicit_solve(solver_fun, optimality_fun, solve, has_aux, init_params, args, kwargs,
                    signature=None):
    dyn, _, rebuild = partition_static((args, kwargs))

    def solver_call(init, dyn):
        a, k = rebuild(dyn)
        return solver_fun(init, *a, **k)

    own_signature = _signature_or_none(optimality_fun)

    def optimality_call(x, dyn):
        a, k = rebuild(dyn)
        if signature is not None:
            a, k = _optimality_call_split(signature, own_signature, a, k)
        return optimality_fun(x, *a, **k)

    # Hoist arrays closed over by the solver or the optimality function into explicit
    # inputs: custom_jvp cannot see closed-over tracers, and would otherwise fail (or, in
    # some JAX versions, silently give them zero derivatives).
    solver_conv, solver_consts = jax.closure_convert(solver_call, init_params, dyn)
    out_shape = jax.eval_shape(solver_conv, init_params, dyn, *solver_consts)
    sol_shape = out_shape[0] if has_aux else out_shape
    example_sol = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sol_shape)
    opt_conv, opt_consts = jax.closure_convert(optimality_call, example_sol, dyn)

    @jax.custom_jvp
    def root(init, dyn, solver_consts, opt_consts):
        return solver_conv(init, dyn, *solver_consts)

    @root.defjvp
    def root_jvp_rule(primals, tangents):
        init, dyn, s_consts, o_consts = primals
        _, ddyn, _, do_consts = tangents
        out = root(init, dyn, s_consts, o_consts)
        sol = out[0] if has_aux else out
        fun = lambda x, d, c: opt_conv(x, d, *c)
        dsol = root_jvp(fun, sol, (dyn, o_consts), (ddyn, do_consts), solve=solve)
        if has_aux:
            return out, (dsol, jax.tree.map(_zero_tangent, out[1]))
        return out, dsol

    return root(init_params, dyn, list(solver_consts), list(opt_consts))


def custom_root(optimality_fun: Callable, has_aux: bool = False,
                solve: LinearSolve | None = None,
                reference_signature: Callable | None = None):
    """Decorator adding implicit differentiation to a root solver.

    The decorated ``solver(init_params, *args, **kwargs)`` must return ``x*`` with
    ``optimality_fun(x*, *args, **kwargs) == 0`` (or ``(x*, aux)`` when ``has_aux``).
    Derivatives of ``x*`` with respect to every positional and keyword argument except
    ``init_params`` then come from the implicit function theorem, in forward and reverse
    mode and at any order.

    Args:
      optimality_fun: ``F(x, *args, **kwargs)``; its output has the structure of ``x``.
      has_aux: the solver returns ``(x*, aux)``; ``aux`` is passed through and has zero
        derivative.
      solve: linear solver ``solve(matvec, b) -> x`` for the implicit system (default
        :func:`~hyperopt.linear_solve.solve_auto`). Use ``functools.partial`` for options.
      reference_signature: a function whose signature the solver's and the optimality
        function's arguments both follow, for when ``optimality_fun``'s own signature is
        ambiguous (e.g. ``**kwargs``). Defaults to ``optimality_fun``.

    Python ``int``/``bool``/``str`` arguments are treated as static; arrays and floats
    are differentiable. The solver is called with the arguments as given; the
    optimality function with the arguments bound to the reference signature, passed
    positionally wherever that signature allows (as in JAXopt: keyword arguments of
    the call reach a ``lambda x, *args`` optimality function in signature order), or
    as given when its own signature does not accept that (``optimality(x, **kw)``).

    Example:
      >>> def F(w, lam, X, y):                       # gradient of the ridge objective
      ...     return X.T @ (X @ w - y) / len(y) + lam * w
      >>> @custom_root(F)
      ... def ridge_solver(init_w, lam, X, y):
      ...     return jnp.linalg.solve(X.T @ X / len(y) + lam * jnp.eye(X.shape[1]),
      ...                             X.T @ y / len(y))
      >>> jax.jacobian(ridge_solver, argnums=1)(None, 0.1, X, y)   # shape (p,)
    """
    signature = inspect.signature(reference_signature or optimality_fun)
    name = getattr(reference_signature or optimality_fun, "__name__", "optimality_fun")

    def decorator(solver_fun: Callable) -> Callable:
        @functools.wraps(solver_fun)
        def wrapped(init_params, *args, **kwargs):
            _check_call(signature, args, kwargs, name)
            return _implicit_solve(solver_fun, optimality_fun, solve, has_aux,
                                   init_params, args, kwargs, signature)
        return wrapped

    return decorator


def custom_fixed_point(fixed_point_fun: Callable, has_aux: bool = False,
                       solve: LinearSolve | None = None,
                       reference_signature: Callable | None = None):
    """Decorator adding implicit differentiation to a fixed-point solver.

    The decorated ``solver(init_params, *args, **kwargs)`` returns ``x*`` with
    ``x* = fixed_point_fun(x*, *args, **kwargs)``. Same options as :func:`custom_root`,
    applied to ``F(x, θ) = T(x, θ) - x``.

    Example:
      >>> T = lambda w, lam, X, y: w - 0.1 * (X.T @ (X @ w - y) / len(y) + lam * w)
      >>> solver = custom_fixed_point(T)(my_iteration)
    """
    @functools.wraps(fixed_point_fun)  # carries its signature: see custom_root on arguments
    def optimality_fun(x, *args, **kwargs):
        return jax.tree.map(jnp.subtract, fixed_point_fun(x, *args, **kwargs), x)

    return custom_root(optimality_fun, has_aux=has_aux, solve=solve,
                       reference_signature=reference_signature or fixed_point_fun)
