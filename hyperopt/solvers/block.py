"""Block coordinate descent and mirror descent, for block-structured problems such as
the multiclass SVM dual (one simplex per sample) and the lasso (one coordinate a block)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hyperopt import prox as prox_lib
from hyperopt.solvers.base import IterativeSolver, OptStep, SimpleState
from hyperopt.tree_util import tree_norm

__all__ = ["BlockCoordinateDescent", "CompositeLinearFunction", "MirrorDescent"]

_sg = jax.lax.stop_gradient


class CompositeLinearFunction(NamedTuple):
    """``f(x, *args) = subfun(M(*args)ᵀ x, *args) + <linear_term(*args), x>``.

    ``x`` has shape ``(n_blocks, ...)``: block ``i`` is ``x[i]``, paired with row ``i``
    of the design matrix ``M`` (shape ``(n_blocks, d)``); ``Mᵀx`` has shape
    ``(d, ...)``. This structure lets block coordinate descent update one block in
    ``O(d)`` by keeping ``Mᵀx`` current.

    Attributes:
      subfun: ``subfun(predictions, *args) -> scalar``, smooth.
      design: ``design(*args) -> M``.
      subfun_lipschitz: ``(*args) -> L``, Lipschitz constant of ``∇subfun``; block ``i``
        then has Lipschitz constant ``||M_i||² L``.
      linear_term: ``(*args) -> c`` shaped like ``x``, or ``None``.

    Example (lasso, blocks = coordinates): ``M = Xᵀ``, ``subfun(z) = ||z - y||²/(2n)``.
    """

    subfun: Callable
    design: Callable
    subfun_lipschitz: Callable
    linear_term: Callable | None = None

    def __call__(self, x, *args):
        M = self.design(*args)
        value = self.subfun(jnp.tensordot(M, x, axes=(0, 0)), *args)
        if self.linear_term is not None:
            value = value + jnp.vdot(self.linear_term(*args), x)
        return value


def _fixed_point_residual(fun, block_prox, x, hyperparams, args, eta, hp_axis=None):
    """``prox_rows(x - η ∇f(x)) - x``: zero exactly at a solution."""
    grad = jax.grad(fun)(x, *args)
    moved = x - eta * grad
    return jax.vmap(block_prox, in_axes=(0, hp_axis, None))(moved, hyperparams, eta) - x


def _global_stepsize(fun: CompositeLinearFunction, args):
    """1/L with L = ||M||_F² L_subfun >= ||M||₂² L_subfun: a safe fixed-point step that costs
    one pass over M (not an SVD, which would rerun at every epoch and every matvec of the
    implicit linear solve)."""
    M = fun.design(*args)
    return _sg(1.0 / (jnp.sum(M ** 2) * fun.subfun_lipschitz(*args)))


@dataclasses.dataclass(eq=False, frozen=True)
class BlockCoordinateDescent(IterativeSolver):
    """Cyclic block coordinate descent; ``run(init_params, hyperparams_prox, *args)``.

    One iteration is one pass over all blocks; block ``i`` takes a prox-gradient step
    with its own step size ``1 / (||M_i||² L)`` (for the SVM dual ``L = 1/λ``; JAXopt's
    constant omits that factor, so its BCD stalls when λ ≠ 1). ``error`` is the gradient
    mapping ``||T(x) - x|| / η`` of the full proximal gradient map ``T`` (step ``η``),
    whose fixed point is also the optimality condition used for implicit differentiation.

    Attributes:
      fun: a :class:`CompositeLinearFunction`.
      block_prox: ``prox(x_i, hyperparams_prox, scaling)`` for one block, e.g.
        :func:`hyperopt.prox.prox_lasso` or a simplex projection.
      block_hyperparams: ``hyperparams_prox`` holds one entry per block along its first
        axis (e.g. per-feature lasso penalties); block ``i`` gets entry ``i``.

    Example:
      >>> bcd = BlockCoordinateDescent(fun=svm_dual_fun, block_prox=prox_simplex_block)
      >>> beta = bcd.run(beta0, None, X, Y, lam).params
    """

    fun: CompositeLinearFunction
    block_prox: Callable = prox_lib.prox_none
    block_hyperparams: bool = False

    def _block_hp(self, hyperparams_prox, i):
        if not self.block_hyperparams:
            return hyperparams_prox
        return jax.tree.map(lambda h: h[i], hyperparams_prox)

    def init_state(self, init_params, hyperparams_prox, *args) -> SimpleState:
        dtype = init_params.dtype
        return SimpleState(jnp.asarray(0), jnp.asarray(jnp.inf, dtype), jnp.asarray(False))

    def update(self, params, state, hyperparams_prox, *args) -> OptStep:
        M = self.fun.design(*args)
        L = self.fun.subfun_lipschitz(*args)
        c = None if self.fun.linear_term is None else self.fun.linear_term(*args)
        etas = _sg(1.0 / jnp.maximum(jnp.sum(M ** 2, axis=1) * L, 1e-30))
        pred_grad = jax.grad(self.fun.subfun)

        def block_step(carry, i):
            x, z = carry  # z = Mᵀx, kept current
            g_i = jnp.tensordot(M[i], pred_grad(z, *args), axes=(0, 0))
            if c is not None:
                g_i = g_i + c[i]
            new_i = self.block_prox(x[i] - etas[i] * g_i, self._block_hp(hyperparams_prox, i), etas[i])
            z = z + jnp.tensordot(M[i], new_i - x[i], axes=0)
            return (x.at[i].set(new_i), z), None

        z0 = jnp.tensordot(M, params, axes=(0, 0))
        (x, _), _ = jax.lax.scan(block_step, (params, z0), jnp.arange(params.shape[0]))
        # the gradient mapping ||T(x) - x|| / η: zero at a solution, and unlike the raw
        # residual it does not shrink with the (conservative) fixed-point step η
        residual = self.optimality_fun(x, hyperparams_prox, *args)
        error = tree_norm(residual) / _global_stepsize(self.fun, args)
        return OptStep(x, SimpleState(state.iter_num + 1, error, state.converged))

    def optimality_fun(self, params, hyperparams_prox, *args):
        hp_axis = 0 if self.block_hyperparams else None
        return _fixed_point_residual(self.fun, self.block_prox, params, hyperparams_prox, args,
                                     _global_stepsize(self.fun, args), hp_axis)

    def _reference_signature(self):
        return lambda params, hyperparams_prox, *args: None


@dataclasses.dataclass(eq=False, frozen=True)
class MirrorDescent(IterativeSolver):
    """Entropic mirror descent on a product of simplices; ``run(init_params, *args)``.

    Every row of ``params`` (shape ``(n_blocks, k)``) lies on the simplex
    ``{x >= 0, sum x = 1}``; the update is ``x_i ← x_i ⊙ exp(-η ∇_i f) / Z_i``.
    Start from a strictly positive point (e.g. uniform rows). ``stepsize`` is a float or
    a function of the iteration number. ``error`` and the implicit optimality condition
    are the Euclidean projected-gradient fixed point (same solution, well defined on the
    boundary, where the entropic map is not).

    Example:
      >>> md = MirrorDescent(fun=svm_dual_objective, stepsize=0.5)
      >>> beta = md.run(jnp.full((n, k), 1 / k), X, Y, lam).params
    """

    fun: Callable
    stepsize: float | Callable = 1.0

    def _eta(self, iter_num):
        return self.stepsize(iter_num) if callable(self.stepsize) else self.stepsize

    def init_state(self, init_params, *args) -> SimpleState:
        return SimpleState(jnp.asarray(0), jnp.asarray(jnp.inf, init_params.dtype), jnp.asarray(False))

    def update(self, params, state, *args) -> OptStep:
        grad = jax.grad(self.fun)(params, *args)
        tiny = jnp.finfo(params.dtype).tiny  # log(0) guard that exists in float32 too
        logits = jnp.log(jnp.maximum(params, tiny)) - self._eta(state.iter_num) * grad
        x = jax.nn.softmax(logits, axis=-1)
        error = tree_norm(self.optimality_fun(x, *args))
        return OptStep(x, SimpleState(state.iter_num + 1, error, state.converged))

    def optimality_fun(self, params, *args):
        grad = jax.grad(self.fun)(params, *args)
        return jax.vmap(prox_lib.projection_simplex)(params - grad) - params
