"""First-order solvers: gradient descent, proximal gradient, projected gradient."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt import prox as prox_lib
from hyperopt.linear_solve import solve_cg
from hyperopt.solvers.base import (
    IterativeSolver,
    OptStep,
    backtracking_with_payload,
    eager_cond,
    value_and_grad_aux,
    value_only,
)
from hyperopt.tree_util import stop_gradient_inexact, tree_norm, tree_vdot

__all__ = ["GradientDescent", "ProjectedGradient", "ProximalGradient", "ProxGradState"]

_sg = jax.lax.stop_gradient


class ProxGradState(NamedTuple):
    """State of :class:`ProximalGradient` (and of gradient/projected gradient descent).

    ``y``/``t`` are the extrapolated point of the accelerated (FISTA/Nesterov) method
    (without acceleration ``y`` is the iterate itself); ``y_value``/``y_grad`` are f and ∇f
    at ``y`` where the solver carries them (implicit mode with the line search and no
    momentum, where the accepted trial gives them), else None: ``update`` evaluates them at
    its start, as JAXopt does (``init_state`` needs no objective arguments, and a run of n
    fixed-step iterations calls ``fun`` n times).
    """

    iter_num: jax.Array
    error: jax.Array
    converged: jax.Array
    stepsize: jax.Array
    y: Any
    t: jax.Array
    y_value: jax.Array
    y_grad: Any
    aux: Any


class _TrialPullback:
    """One trial's forward pass with its vjp kept as a loop-carriable pytree.

    ``forward(x) -> (value, payload)`` with ``payload = (value, residuals, aux)``: the
    pullback's leaves minus those that are the objective's (closed-over) arguments, which
    stay out of the line search's loop carry; ``grad(payload)`` runs the backward pass.
    Every trace of ``forward`` builds the same pullback structure; the first one's is kept.
    """

    def __init__(self, fun, has_aux, arguments):
        self.fun, self.has_aux, self.arguments = fun, has_aux, arguments
        self._const = {id(leaf): leaf for leaf in jax.tree.leaves(arguments)}
        self._layout = None

    def forward(self, x):
        args, kwargs = self.arguments

        def f(p):
            out = self.fun(p, *args, **kwargs)
            return out if self.has_aux else (out, None)

        value, pull, aux = jax.vjp(f, x, has_aux=True)
        leaves, treedef = jax.tree.flatten(pull)
        marks = tuple(id(leaf) if id(leaf) in self._const else None for leaf in leaves)
        if self._layout is None:
            self._layout = (treedef, marks)
        elif len(marks) != len(self._layout[1]):
            raise AssertionError("line-search trials traced to different pullbacks")
        carried = [leaf for leaf, mark in zip(leaves, marks, strict=True) if mark is None]
        return value, (value, carried, aux)

    def grad(self, payload):
        value, carried, _ = payload
        treedef, marks = self._layout
        rest = iter(carried)
        leaves = [next(rest) if mark is None else self._const[mark] for mark in marks]
        pull = jax.tree.unflatten(treedef, leaves)
        return pull(jnp.ones_like(value))[0]


@dataclasses.dataclass(eq=False, frozen=True)
class ProximalGradient(IterativeSolver):
    """Proximal gradient (ISTA/FISTA) for ``min_x f(x, *args) + g(x, hyperparams_prox)``.

    ``run(init_params, hyperparams_prox, *args, **kwargs)``. Implicit differentiation
    uses the fixed point ``x = prox(x - η ∇f(x), hyperparams_prox, η)``, so derivatives
    with respect to ``hyperparams_prox`` (e.g. the lasso penalty) and ``args`` are exact.

    Attributes:
      fun: smooth part ``f(params, *args, **kwargs) -> scalar`` (or ``(scalar, aux)``).
      prox: ``prox(x, hyperparams, scaling) -> x`` (see :mod:`hyperopt.prox`).
      stepsize: fixed step if positive, a schedule ``stepsize(iter_num)`` if callable;
        otherwise backtracking with JAXopt's sufficient-decrease test (accepts steps up to
        1/L), decided by a curvature test where value changes are below rounding.
      acceleration: FISTA momentum, with adaptive restart.
      has_aux: ``fun`` returns ``(value, aux)``; the last ``aux`` is in the state.
      maxls, decrease_factor: line search budget and shrink factor.
      value_and_grad: ``fun`` returns ``(value, grad)`` (``((value, aux), grad)`` with
        ``has_aux``), as in JAXopt.

    Example:
      >>> pg = ProximalGradient(fun=least_squares, prox=prox_lasso)
      >>> w = pg.run(jnp.zeros(p), 0.1, X, y).params
    """

    fun: Callable
    prox: Callable = prox_lib.prox_none
    stepsize: float | Callable = 0.0
    acceleration: bool = True
    has_aux: bool = False
    maxls: int = 15
    decrease_factor: float = 0.5
    value_and_grad: bool = False

    def _value_and_grad(self, params, *args, **kwargs):
        if self.value_and_grad:  # fun returns (value, grad) or ((value, aux), grad)
            value, grad = self.fun(params, *args, **kwargs)
            value, aux = value if self.has_aux else (value, None)
            return value, grad, aux
        return value_and_grad_aux(self.fun, self.has_aux, params, *args, **kwargs)

    def _value(self, params, *args, **kwargs):
        if self.value_and_grad:
            return self._value_and_grad(params, *args, **kwargs)[0]
        return value_only(self.fun, self.has_aux, params, *args, **kwargs)

    def init_state(self, init_params, hyperparams_prox=None, *args, **kwargs) -> ProxGradState:
        # As JAXopt: fun is evaluated here only for its aux (the objective's arguments may
        # be left out otherwise); update evaluates f and ∇f at its start.
        aux = None
        if self.has_aux:  # fun returns (value, aux), or ((value, aux), grad)
            out = self.fun(init_params, *args, **kwargs)
            aux = out[0][1] if self.value_and_grad else out[1]
        dtype = jnp.result_type(*jax.tree.leaves(init_params))
        fixed = not callable(self.stepsize) and self.stepsize > 0
        stepsize = jnp.asarray(self.stepsize if fixed else 1.0, dtype)
        error = jnp.asarray(jnp.inf, dtype)  # measured after the first step
        return ProxGradState(iter_num=jnp.asarray(0), error=error, converged=jnp.asarray(False),
                             stepsize=stepsize, y=init_params, t=jnp.asarray(1.0, dtype),
                             y_value=None, y_grad=None, aux=aux)

    def _loop_state(self, params, state, hyperparams_prox=None, *args, **kwargs):
        if self._carries_grad and state.y_grad is None:  # one structure for the loop carry
            value, grad, aux = self._value_and_grad(state.y, *args, **kwargs)
            state = state._replace(y_value=value, y_grad=grad, aux=aux)
        return state

    def _apply_prox(self, x, hyperparams_prox, eta):
        return self.prox(x, hyperparams_prox, eta)

    def _prox_step(self, y, grad, eta, hyperparams_prox):
        moved = jax.tree.map(lambda yi, gi: yi - eta * gi, y, grad)
        return self._apply_prox(moved, hyperparams_prox, eta)

    def _stepsize(self, state, hyperparams_prox, args, kwargs):
        """``(eta, next_start, accepted)``: this iteration's step, the next search's first trial,
        and ``(value, grad, aux)`` at the accepted point when the search kept them (else None)."""
        if callable(self.stepsize):  # a schedule stepsize(iter_num)
            eta = jnp.asarray(self.stepsize(state.iter_num), state.stepsize.dtype)
            return eta, eta, None
        if self.stepsize > 0:
            return state.stepsize, state.stepsize, None
        y, g, fy = _sg(state.y), _sg(state.y_grad), _sg(state.y_value)
        hp, args, kwargs = stop_gradient_inexact((hyperparams_prox, args, kwargs))
        noise = 10 * jnp.finfo(fy.dtype).eps * jnp.abs(fy)  # rounding level of f values

        # Implicit mode without momentum: the next point is the accepted trial itself, so
        # each trial keeps its forward pass (the residuals of its vjp, not the data, which
        # stays closed over) and the accepted one's gradient costs one backward pass instead
        # of a fresh value-and-gradient (JAXopt evaluates f and ∇f again there).
        keep = _TrialPullback(self.fun, self.has_aux, (args, kwargs)) if self._reuse_trial else None

        def accept(eta):
            # JAXopt's sufficient decrease f(x⁺) <= f(y) + <g, d> + ||d||²/(2η) (d = x⁺ - y),
            # which accepts steps up to 1/L. Its margin is of the order of ||d||²/(2η) (the
            # linear term cancels against f(x⁺) - f(y)); once that falls below the rounding
            # of f the comparison is noise (the step would collapse, or blow up with a
            # slack). With a prox, <g, d> stays far above ||d||² near the optimum (g does not
            # vanish there), so it must not enter this threshold. There the curvature test
            # <∇f(x⁺) - g, d> <= ||d||²/η, which also holds exactly for η <= 1/L, decides
            # from gradients instead.
            x = self._prox_step(y, g, eta, hp)
            d = jax.tree.map(jnp.subtract, x, y)
            sqdist = tree_vdot(d, d)
            linear = tree_vdot(d, g)
            tiny = sqdist / (2 * eta) <= noise

            def by_value(x):
                if keep is not None:
                    f_new, payload = keep.forward(x)
                else:
                    f_new, payload = self._value(x, *args, **kwargs), ()
                return eta * (f_new - fy) <= eta * linear + 0.5 * sqdist, payload

            def by_curvature(x):
                if keep is not None:
                    _, payload = keep.forward(x)
                    g_new = keep.grad(payload)
                else:
                    g_new, payload = self._value_and_grad(x, *args, **kwargs)[1], ()
                return tree_vdot(jax.tree.map(jnp.subtract, g_new, g), d) <= sqdist / eta, payload

            return eager_cond(tiny, by_curvature, by_value, x, jit=self.jit)

        eta, payload = backtracking_with_payload(accept, state.stepsize, maxls=self.maxls,
                                                 decrease_factor=self.decrease_factor,
                                                 jit=self.jit)
        # JAXopt's schedule: the next search starts at η/decrease_factor (1.0 once η <= 1e-6).
        start = jnp.where(eta <= 1e-6, 1.0, eta / self.decrease_factor)
        accepted = None if keep is None else (payload[0], keep.grad(payload), payload[2])
        return eta, jax.lax.stop_gradient(start), accepted

    @property
    def _reuse_trial(self) -> bool:
        """The accepted trial is the next point (no momentum) and the iterations are not
        differentiated (implicit mode), so its value and gradient can be reused."""
        return self.implicit_diff and not self.acceleration and not self.value_and_grad

    @property
    def _carries_grad(self) -> bool:
        """The state carries f and ∇f at ``y`` from one update to the next (the line
        search's accepted trial gives them); otherwise each update evaluates them."""
        searching = not callable(self.stepsize) and not self.stepsize > 0
        return self._reuse_trial and searching

    def update(self, params, state, hyperparams_prox=None, *args, **kwargs) -> OptStep:
        if state.y_grad is None:  # not carried (or fresh from init_state): f, ∇f at y
            value, grad, aux = self._value_and_grad(state.y, *args, **kwargs)
            state = state._replace(y_value=value, y_grad=grad,
                                   aux=aux if self.has_aux else state.aux)
        eta, next_start, accepted = self._stepsize(state, hyperparams_prox, args, kwargs)
        new_params = self._prox_step(state.y, state.y_grad, eta, hyperparams_prox)
        # Gradient mapping at y with the fixed-point step (not the line search's, which
        # can be tiny): zero exactly at a solution; ||∇f(y)|| when there is no prox.
        eta_fp = self._fixed_point_stepsize()
        error = tree_norm(jax.tree.map(
            jnp.subtract, self._prox_step(state.y, state.y_grad, eta_fp, hyperparams_prox),
            state.y)) / eta_fp
        if self.acceleration:
            # FISTA with adaptive (gradient) restart: momentum is reset whenever it points
            # uphill, which restores linear convergence on strongly convex problems, where
            # accurate hypergradients need tight inner solutions.
            restart = tree_vdot(jax.tree.map(jnp.subtract, state.y, new_params),
                                jax.tree.map(jnp.subtract, new_params, params)) > 0
            t = (1 + jnp.sqrt(1 + 4 * state.t ** 2)) / 2
            momentum = jnp.where(restart, 0.0, (state.t - 1) / t)
            t = jnp.where(restart, 1.0, t)
            y = jax.tree.map(lambda xn, x: xn + momentum * (xn - x), new_params, params)
        else:
            t, y = state.t, new_params
        if self._carries_grad:  # y is the accepted trial point (no momentum)
            value, grad, aux = accepted
        else:  # the next update evaluates them (JAXopt's order: n iterations, n calls)
            value, grad, aux = None, None, state.aux
        state = ProxGradState(iter_num=state.iter_num + 1, error=error, converged=state.converged,
                              stepsize=next_start, y=y, t=t, y_value=value, y_grad=grad,
                              aux=aux)
        return OptStep(new_params, state)

    def _fixed_point_stepsize(self):
        return self.stepsize if not callable(self.stepsize) and self.stepsize > 0 else 1.0

    def optimality_fun(self, params, hyperparams_prox=None, *args, **kwargs):
        grad = self._value_and_grad(params, *args, **kwargs)[1]
        moved = self._prox_step(params, grad, self._fixed_point_stepsize(), hyperparams_prox)
        return jax.tree.map(jnp.subtract, moved, params)

    def _reference_signature(self):
        return lambda params, hyperparams_prox=None, *args, **kwargs: None


@dataclasses.dataclass(eq=False, frozen=True)
class GradientDescent(ProximalGradient):
    """Gradient descent for ``min_x fun(x, *args, **kwargs)``; ``run(init_params, *args, **kwargs)``.

    Fixed ``stepsize`` if positive, else backtracking (Armijo) line search; optional
    Nesterov ``acceleration`` (off by default). Implicit differentiation uses
    ``∇ₓ fun(x*, ...) = 0``.

    Example (the seed's ridge regression):
      >>> gd = GradientDescent(fun=ridge_reg_objective, maxiter=500, implicit_diff=True)
      >>> w = gd.run(init_params, l2reg=l2reg, X=X, y=y).params
    """

    default_linear_solve: ClassVar[Callable] = staticmethod(solve_cg)  # Hessian: symmetric

    acceleration: bool = False

    def init_state(self, init_params, *args, **kwargs):
        return super().init_state(init_params, None, *args, **kwargs)

    def update(self, params, state, *args, **kwargs):
        return super().update(params, state, None, *args, **kwargs)

    def _loop_state(self, params, state, *args, **kwargs):
        return super()._loop_state(params, state, None, *args, **kwargs)

    def optimality_fun(self, params, *args, **kwargs):
        return self._value_and_grad(params, *args, **kwargs)[1]

    def _reference_signature(self):
        return self.fun


@dataclasses.dataclass(eq=False, frozen=True)
class ProjectedGradient(ProximalGradient):
    """Projected gradient for ``min_{x ∈ C} f(x)``; ``run(init_params, hyperparams_proj=None,
    *args, **kwargs)`` (JAXopt's argument name; positional use works as before).

    ``projection(x, hyperparams_proj) -> x`` onto ``C`` (see :mod:`hyperopt.prox`).
    Implicit differentiation uses the fixed point ``x = P(x - η ∇f(x))``: it is exact
    only once the solver has identified the active set, so keep ``tol`` tight.

    Example:
      >>> pg = ProjectedGradient(fun=f, projection=projection_simplex)
      >>> x = pg.run(x0, 1.0, A).params      # on the simplex of total 1.0
    """

    projection: Callable = prox_lib.projection_non_negative

    def _apply_prox(self, x, hyperparams_proj, eta):
        return self.projection(x, hyperparams_proj)

    def init_state(self, init_params, hyperparams_proj=None, *args, **kwargs):
        return super().init_state(init_params, hyperparams_proj, *args, **kwargs)

    def update(self, params, state, hyperparams_proj=None, *args, **kwargs):
        return super().update(params, state, hyperparams_proj, *args, **kwargs)

    def _loop_state(self, params, state, hyperparams_proj=None, *args, **kwargs):
        return super()._loop_state(params, state, hyperparams_proj, *args, **kwargs)

    def optimality_fun(self, params, hyperparams_proj=None, *args, **kwargs):
        return super().optimality_fun(params, hyperparams_proj, *args, **kwargs)

    def _reference_signature(self):
        return lambda params, hyperparams_proj=None, *args, **kwargs: None
