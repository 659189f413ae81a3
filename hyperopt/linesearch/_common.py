"""What the three line searches share: the ``run`` loop, the state step, pytree helpers.

A line search is an iterative solver over the step size: ``init_state(init_stepsize,
params, value, grad, descent_direction, fun_args, fun_kwargs)``, ``update(stepsize, state,
params, ...) -> LineSearchStep`` and ``run(init_stepsize, params, ...) -> LineSearchStep``,
as in JAXopt. ``run`` iterates ``update`` with :func:`hyperopt.loop.run_loop` (the one loop)
until ``state.error <= tol`` or ``maxiter`` updates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperopt.loop import run_loop
from hyperopt.tree_util import partition_static

__all__ = ["IterativeLineSearch", "LineSearchStep"]

AutoOrBoolean = str | bool
NUM_EVAL_DTYPE = "int32"


class LineSearchStep(NamedTuple):
    """What a line search's ``update`` and ``run`` return: the step size and the state."""

    stepsize: Any
    state: Any


# -- pytree helpers (JAXopt's names, complex-aware) ----------------------------------------
def tree_add_scalar_mul(tree_x, scalar, tree_y):
    """``x + scalar * y`` leaf by leaf."""
    return jax.tree.map(lambda x, y: x + scalar * y, tree_x, tree_y)


def tree_scalar_mul(scalar, tree):
    return jax.tree.map(lambda x: scalar * x, tree)


def tree_sub(a, b):
    return jax.tree.map(jnp.subtract, a, b)


def tree_conj(tree):
    return jax.tree.map(jnp.conj, tree)


def tree_vdot_real(a, b):
    """``Re <a, b>`` without conjugation (JAXopt's ``tree_vdot_real``)."""
    return sum(jnp.sum(jnp.real(x) * jnp.real(y) + jnp.imag(x) * jnp.imag(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def tree_l2_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.real(x * jnp.conj(x))) for x in jax.tree.leaves(tree)))


def tree_single_dtype(tree):
    """The dtype all leaves share (``None`` for an empty tree); ValueError if they differ."""
    dtypes = {jnp.asarray(p).dtype for p in jax.tree.leaves(tree)
              if isinstance(p, (bool, int, float, complex, np.ndarray, jax.Array))}
    if not dtypes:
        return None
    if len(dtypes) > 1:
        raise ValueError(f"the leaves of params have different dtypes {sorted(map(str, dtypes))}; "
                         "allowed: one dtype")
    return dtypes.pop()


def get_real_dtype(dtype):
    """The real dtype of a complex one (the dtype itself otherwise)."""
    return jnp.finfo(dtype).dtype if dtype is not None and jnp.issubdtype(
        dtype, jnp.complexfloating) else dtype


def cond(pred, if_fun, else_fun, *operands, jit=True):
    """``lax.cond``, or a Python branch when not compiling (``jit=False``).

    Static leaves of the operands (Python ints, strings: e.g. a number of classes in
    ``fun_args``) are closed over rather than traced.
    """
    dynamic, _, rebuild = partition_static(list(operands))
    branches = (lambda d: if_fun(*rebuild(d)), lambda d: else_fun(*rebuild(d)))
    if not jit:
        with jax.disable_jit():
            return jax.lax.cond(pred, *branches, dynamic)
    return jax.lax.cond(pred, *branches, dynamic)


# -- fun / grad / value_and_grad with an aux output ----------------------------------------
def make_funs_with_aux(fun: Callable, value_and_grad: bool | Callable, has_aux: bool):
    """``(fun, grad, value_and_grad)`` returning ``(value, aux)``, ``(grad, aux)`` and
    ``((value, aux), grad)``, from JAXopt's three ways of passing an objective."""
    def add_aux_vg(vg):
        def vg_aux(*a, **k):
            v, g = vg(*a, **k)
            return (v, None), g
        return vg_aux

    def split(vg_aux):
        def f(*a, **k):
            return vg_aux(*a, **k)[0]

        def g(*a, **k):
            (_, aux), grad = vg_aux(*a, **k)
            return grad, aux
        return f, g

    if value_and_grad is True:
        vg = fun if has_aux else add_aux_vg(fun)
        f, g = split(vg)
        return f, g, vg
    if value_and_grad is False:
        f = fun if has_aux else (lambda *a, **k: (fun(*a, **k), None))
        vg = jax.value_and_grad(f, has_aux=True)
    else:
        f = fun if has_aux else (lambda *a, **k: (fun(*a, **k), None))
        vg = value_and_grad if has_aux else add_aux_vg(value_and_grad)
    return f, split(vg)[1], vg


class IterativeLineSearch:
    """Base of the line-search objects (mixin for frozen-less dataclasses).

    Subclasses are dataclasses with ``fun``, ``value_and_grad``, ``has_aux``, ``maxiter``,
    ``tol``, ``verbose``, ``jit`` and ``unroll`` fields. ``jit=False`` runs ``update`` in a
    Python loop (prints and pdb work; ``fun`` may be non-jittable); ``"auto"``/``True``
    run it in a ``lax.while_loop`` (compiled; Python ints in ``fun_args`` stay static).
    ``unroll`` is accepted for JAXopt compatibility: solvers here never
    differentiate through the search (its inputs are ``stop_gradient``-ed), so the search
    is always a ``while_loop`` (or the Python loop).
    """

    def _post_init_funs(self):
        self._fun_with_aux, self._grad_with_aux, self._value_and_grad_fun_with_aux = \
            make_funs_with_aux(self.fun, self.value_and_grad, self.has_aux)

    def _stop(self, state):
        """A boolean that ends the search besides ``error <= tol`` (None: nothing else)."""
        return None

    def _make_zero_step(self, init_stepsize, state) -> LineSearchStep:
        return LineSearchStep(stepsize=init_stepsize, state=state)

    def log_info(self, state, error_name="Error", additional_info=None):
        additional_info = additional_info or {}
        other = " ".join(key + ":{} " for key in additional_info)
        jax.debug.print("INFO: hyperopt." + type(self).__name__ + ": Iter: {} " + error_name
                        + " (stopping criterion): {} " + other, state.iter_num, state.error,
                        *additional_info.values(), ordered=True)

    def run(self, init_stepsize, params, value=None, grad=None, descent_direction=None,
            fun_args=(), fun_kwargs=None) -> LineSearchStep:
        """Searches from ``init_stepsize`` along ``descent_direction`` (default ``-grad``).

        Returns ``LineSearchStep(stepsize, state)``; ``state.params``/``value``/``grad``
        are the accepted point and its value and gradient.
        """
        fun_kwargs = {} if fun_kwargs is None else fun_kwargs
        fun_args = list(fun_args)
        state = self.init_state(init_stepsize, params, value, grad, descent_direction,
                                fun_args, fun_kwargs)
        if self.maxiter == 0:
            return self._make_zero_step(init_stepsize, state)
        update = self.update

        def step(stepsize, state):
            return tuple(update(stepsize, state, params, value, grad, descent_direction,
                                fun_args, fun_kwargs))

        # The first update runs outside the loop (as in JAXopt): it fills state fields
        # that init_state leaves None (aux), so that the loop's carry keeps one structure.
        stepsize, state = step(init_stepsize, state)
        stepsize, state = run_loop(step, stepsize, state, maxiter=self.maxiter,
                                   tol=self.tol, unrolled=False, jit=bool(self.jit),
                                   stop=self._stop)
        return LineSearchStep(stepsize, state)
