"""What the line-search solvers (LBFGS, BFGS, NonlinearCG) share: JAXopt's options, the
objective in its three forms, the line-search object, and one searched or fixed step."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import jax.numpy as jnp

from hyperopt.linear_solve import solve_cg
from hyperopt.linesearch import check_linesearch_options, init_stepsize, line_step, setup_linesearch
from hyperopt.linesearch._common import make_funs_with_aux, tree_add_scalar_mul
from hyperopt.solvers.base import IterativeSolver, OptStep

__all__ = ["SearchingSolver"]


@dataclasses.dataclass(eq=False, frozen=True)
class SearchingSolver(IterativeSolver):
    """Base of the solvers that take JAXopt's line-search options (not used directly).

    Attributes:
      fun: ``fun(params, *args, **kwargs) -> scalar`` (or ``(scalar, aux)`` with
        ``has_aux``; ``((value, aux), grad)``/``(value, grad)`` with ``value_and_grad``).
      value_and_grad: ``fun`` returns the gradient too.
      has_aux: ``fun`` returns auxiliary outputs, kept in ``state.aux``.
      stepsize: a fixed step if positive, a schedule ``stepsize(iter_num)``, else
        (``<= 0``, default) a line search.
      linesearch: "zoom" (default, strong Wolfe), "backtracking", "hager-zhang", or a
        line-search object (:mod:`hyperopt.linesearch`).
      linesearch_init: first step of each search: "increase" (previous step times
        ``increase_factor``, or ``max_stepsize`` once below ``min_stepsize``), "max",
        "current".
      maxls: line-search iterations.
      condition, decrease_factor: deprecated in JAXopt 0.8 and ignored (a warning).
    """

    default_linear_solve: ClassVar[Callable] = staticmethod(solve_cg)  # Hessian: symmetric

    fun: Callable
    value_and_grad: bool = False
    has_aux: bool = False
    stepsize: float | Callable = 0.0
    linesearch: Any = "zoom"
    linesearch_init: str = "increase"
    condition: Any = None
    maxls: int = 30
    decrease_factor: Any = None
    increase_factor: float = 1.5
    max_stepsize: float = 1.0
    min_stepsize: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        check_linesearch_options(self.linesearch, self.linesearch_init)
        for name in ("condition", "decrease_factor"):
            if getattr(self, name) is not None:
                warnings.warn(f"{type(self).__name__} argument {name} is deprecated (as in "
                              "JAXopt 0.8) and ignored", DeprecationWarning, stacklevel=3)

    @functools.cached_property
    def _funs(self):
        return make_funs_with_aux(self.fun, self.value_and_grad, self.has_aux)

    def _value_and_grad_with_aux(self, params, *args, **kwargs):
        return self._funs[2](params, *args, **kwargs)

    @functools.cached_property
    def linesearch_solver(self):
        """The line-search object ``linesearch`` names (or is)."""
        return setup_linesearch(self.linesearch, fun=self._funs[0],
                                value_and_grad=self._funs[2], has_aux=True,
                                maxlsiter=self.maxls, max_stepsize=self.max_stepsize,
                                jit=self.jit, unroll=self.unroll,
                                verbose=max(int(self.verbose) - 1, 0))

    @property
    def _uses_linesearch(self) -> bool:
        return not callable(self.stepsize) and self.stepsize <= 0

    def _step(self, params, state, descent_direction, args, kwargs, ls_direction=...):
        """``(stepsize, new_params, new_value, new_grad, new_aux, failed, counts)`` of one
        step along ``descent_direction`` (searched, fixed or scheduled); ``counts`` are the
        updated ``(num_fun_eval, num_grad_eval, num_linesearch_iter)``."""

        if self._uses_linesearch:
            init_step = init_stepsize(self.linesearch_init, self.max_stepsize, self.min_stepsize,
                                      self.increase_factor, state.stepsize)
            direction = descent_direction if ls_direction is ... else ls_direction
            stepsize, new_params, value, grad, aux, ls_state = line_step(
                self.linesearch_solver, self._value_and_grad_with_aux, init_step, params,
                state.value, state.grad, direction, args, kwargs,
                differentiable=not self.implicit_diff)
            counts = (state.num_fun_eval + ls_state.num_fun_eval,
                      state.num_grad_eval + ls_state.num_grad_eval,
                      state.num_linesearch_iter + ls_state.iter_num)
            return stepsize, new_params, value, grad, aux, ls_state.failed, counts
        stepsize = self.stepsize(state.iter_num) if callable(self.stepsize) else self.stepsize
        new_params = tree_add_scalar_mul(params, stepsize, descent_direction)
        (value, aux), grad = self._value_and_grad_with_aux(new_params, *args, **kwargs)
        counts = (state.num_fun_eval + 1, state.num_grad_eval + 1, state.num_linesearch_iter)
        return stepsize, new_params, value, grad, aux, jnp.asarray(False), counts

    def optimality_fun(self, params, *args, **kwargs):
        if isinstance(params, OptStep):
            params = params.params
        return self._value_and_grad_with_aux(params, *args, **kwargs)[1]

    def _reference_signature(self):
        return self.fun
