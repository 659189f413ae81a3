"""Block coordinate descent and mirror descent, for block-structured problems such as
the multiclass SVM dual (one simplex per sample) and the lasso (one coordinate a block)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperopt import linear_solve as linear_solve_lib
from hyperopt import objective
from hyperopt import projection as projection_lib
from hyperopt import prox as prox_lib
from hyperopt.solvers.base import IterativeSolver, OptStep
from hyperopt.tree_util import tree_norm

__all__ = ["BlockCDState", "BlockCoordinateDescent", "CompositeLinearFunction", "MirrorDescent",
           "MirrorDescentState"]

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


class BlockCDState(NamedTuple):
    """State of :class:`BlockCoordinateDescent` (JAXopt's fields, plus ``converged``).

    ``predictions`` is ``A @ params`` and ``subfun_g`` the gradient of ``subfun`` there.
    """

    iter_num: jax.Array
    error: jax.Array
    predictions: jax.Array
    subfun_g: jax.Array
    num_fun_eval: jax.Array
    num_prox_eval: jax.Array
    num_grad_eval: jax.Array
    converged: jax.Array


class _CompositeView:
    """hyperopt's :class:`CompositeLinearFunction` (``design`` = ``Aᵀ``) seen through
    JAXopt's interface (``make_linop``, ``subfun``, ``b``, ``columnwise_lipschitz_const``)."""

    def __init__(self, fun: CompositeLinearFunction):
        self.fun = fun

    def make_linop(self, *args, **kwargs):
        return objective.LinearOperator(self.fun.design(*args, **kwargs).T)

    def subfun(self, predictions, *args, **kwargs):
        return self.fun.subfun(predictions, *args, **kwargs)

    def columnwise_lipschitz_const(self, *args, **kwargs):
        M = self.fun.design(*args, **kwargs)
        return jnp.sum(M ** 2, axis=1) * self.fun.subfun_lipschitz(*args, **kwargs)

    def b(self, *args, **kwargs):
        return None if self.fun.linear_term is None else self.fun.linear_term(*args, **kwargs)

    def __call__(self, params, *args, **kwargs):
        return self.fun(params, *args, **kwargs)


def _is_jaxopt_style(fun) -> bool:
    return all(callable(getattr(fun, name, None))
               for name in ("make_linop", "subfun", "columnwise_lipschitz_const", "b"))


def _fixed_point_residual(fun, block_prox, x, hyperparams, args, kwargs, eta, hp_axis=None):
    """``prox_rows(x - η ∇f(x)) - x``: zero exactly at a solution."""
    grad = jax.grad(fun)(x, *args, **kwargs)
    moved = x - eta * grad
    return jax.vmap(block_prox, in_axes=(0, hp_axis, None))(moved, hyperparams, eta) - x


def _global_stepsize(fun, args, kwargs):
    """1/Σ_j L_j (= 1/(||A||_F² L) >= 1/(||A||₂² L)): a safe fixed-point step that costs one
    pass over A (not an SVD, which would rerun at every epoch and every matvec of the
    implicit linear solve)."""
    return _sg(1.0 / jnp.sum(fun.columnwise_lipschitz_const(*args, **kwargs)))


@dataclasses.dataclass(eq=False, frozen=True)
class BlockCoordinateDescent(IterativeSolver):
    """Cyclic block coordinate descent; ``run(init_params, hyperparams_prox, *args, **kwargs)``.

    Minimizes ``fun(params, *args, **kwargs) + Σ_j g(params[j], hyperparams_prox)`` where
    ``block_prox`` is the prox of ``g`` and ``fun`` a composite linear function: one of
    :mod:`hyperopt.objective` (JAXopt's: ``least_squares``, ``binary_logreg``,
    ``multiclass_logreg``, ``multiclass_linear_svm_dual``, or a subclass of
    :class:`hyperopt.objective.CompositeLinearFunction`), or a
    :class:`hyperopt.CompositeLinearFunction`. Any other ``fun`` is refused at construction.

    One iteration is one pass over all blocks; block ``j`` takes a prox-gradient step with
    its own step ``1/L_j`` (``columnwise_lipschitz_const``; hyperopt's objectives give the true
    constants, JAXopt's omit the ``1/n_samples`` of the mean and the ``1/l2reg`` of the SVM
    dual, so its steps are smaller or, for ``l2reg < 1``, too large). ``error`` is the gradient
    mapping ``||T(x) - x|| / η`` of the full proximal gradient map ``T`` (step
    ``η = 1/Σ_j L_j``), whose fixed point is also the optimality condition used for implicit
    differentiation (JAXopt: the change of the iterate over one epoch).

    Attributes:
      fun: a composite linear function (see above).
      block_prox: ``prox(x_j, hyperparams_prox, scaling)`` for one block, e.g.
        :func:`hyperopt.prox.prox_lasso`, or a projection through
        :func:`hyperopt.prox.make_prox_from_projection`.
      block_hyperparams: ``hyperparams_prox`` holds one entry per block along its first
        axis (e.g. per-feature lasso penalties); block ``j`` gets entry ``j``.

    Example:
      >>> from hyperopt import objective, prox
      >>> bcd = BlockCoordinateDescent(fun=objective.least_squares, block_prox=prox.prox_lasso)
      >>> w = bcd.run(jnp.zeros(X.shape[1]), hyperparams_prox=0.1, data=(X, y)).params
    """

    fun: Any
    block_prox: Callable = prox_lib.prox_none
    block_hyperparams: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.fun, CompositeLinearFunction) or _is_jaxopt_style(self.fun)):
            raise TypeError(
                f"BlockCoordinateDescent: fun={self.fun!r} is not a composite linear function; "
                "allowed: an objective of hyperopt.objective (least_squares, binary_logreg, "
                "multiclass_logreg, multiclass_linear_svm_dual or a CompositeLinearFunction "
                "subclass) or a hyperopt.CompositeLinearFunction")

    @property
    def _view(self):
        return _CompositeView(self.fun) if isinstance(self.fun, CompositeLinearFunction) else self.fun

    def _block_hp(self, hyperparams_prox, i):
        if not self.block_hyperparams:
            return hyperparams_prox
        return jax.tree.map(lambda h: h[i], hyperparams_prox)

    def init_state(self, init_params, hyperparams_prox, *args, **kwargs) -> BlockCDState:
        fun = self._view
        predictions = fun.make_linop(*args, **kwargs).matvec(init_params)
        subfun_g = jax.grad(fun.subfun)(predictions, *args, **kwargs)
        dtype = jnp.result_type(init_params)
        count = lambda n: jnp.asarray(n, jnp.int32)
        return BlockCDState(jnp.asarray(0), jnp.asarray(jnp.inf, dtype), predictions, subfun_g,
                            count(1), count(0), count(1), jnp.asarray(False))

    def update(self, params, state, hyperparams_prox, *args, **kwargs) -> OptStep:
        fun = self._view
        linop = fun.make_linop(*args, **kwargs)
        c = fun.b(*args, **kwargs)
        etas = _sg(1.0 / jnp.maximum(fun.columnwise_lipschitz_const(*args, **kwargs), 1e-30))
        grad_subfun = jax.grad(fun.subfun)

        def block_step(z, inputs):
            i, x_i = inputs  # z = A x, kept current
            g_i = linop.rmatvec_element(grad_subfun(z, *args, **kwargs), i)
            if c is not None:
                g_i = g_i + c[i]
            new_i = self.block_prox(x_i - etas[i] * g_i, self._block_hp(hyperparams_prox, i),
                                    etas[i])
            return linop.update_matvec(z, new_i - x_i, i), new_i

        # A x recomputed once per epoch: the epoch is then a function of params alone (no
        # drift of the running product, and unrolled derivatives see one expression).
        # Block i reads only z and its own old value, so the blocks are scanned over (the
        # new blocks are the scan's outputs) instead of carrying x and updating x.at[i]:
        # that update made XLA copy the whole x twice per block (old x[i] is read after
        # the in-place write), 2/3 of an epoch of the SVM dual on digits.
        z0 = linop.matvec(params)
        n = params.shape[0]
        z, x = jax.lax.scan(block_step, z0, (jnp.arange(n), params))
        # the gradient mapping ||T(x) - x|| / η: zero at a solution, and unlike the raw
        # residual it does not shrink with the (conservative) fixed-point step η
        residual = self.optimality_fun(x, hyperparams_prox, *args, **kwargs)
        error = tree_norm(residual) / _global_stepsize(fun, args, kwargs)
        state = BlockCDState(state.iter_num + 1, error.astype(state.error.dtype), z,
                             grad_subfun(z, *args, **kwargs), state.num_fun_eval + n,
                             state.num_prox_eval + n, state.num_grad_eval + n, state.converged)
        return OptStep(x, state)

    def optimality_fun(self, params, hyperparams_prox, *args, **kwargs):
        """``prox_rows(params - η ∇fun(params), η) - params`` with ``η = 1/Σ_j L_j``."""
        fun = self._view
        hp_axis = 0 if self.block_hyperparams else None
        return _fixed_point_residual(fun, self.block_prox, params, hyperparams_prox, args,
                                     kwargs, _global_stepsize(fun, args, kwargs), hp_axis)

    def _reference_signature(self):
        return lambda params, hyperparams_prox, *args, **kwargs: None


class MirrorDescentState(NamedTuple):
    """State of :class:`MirrorDescent` (JAXopt's fields, plus ``converged``)."""

    iter_num: jax.Array
    error: jax.Array
    aux: Any
    num_fun_eval: jax.Array
    num_grad_eval: jax.Array
    num_proj_eval: jax.Array
    converged: jax.Array


@dataclasses.dataclass(eq=False, frozen=True)
class MirrorDescent(IterativeSolver):
    """Mirror descent.

    With ``projection_grad`` (JAXopt's interface): ``run(init_params, hyperparams_proj=None,
    *args, **kwargs)`` iterates ``x ← projection_grad(x, ∇fun(x), stepsize, hyperparams_proj)``;
    ``error = ||x_next - x|| / stepsize``; the implicit optimality condition is
    ``projection_grad(x, ∇fun(x), 1, hyperparams_proj) - x``. Build ``projection_grad`` from a
    projection and a mirror map with :meth:`make_projection_grad`.

    Without it (``projection_grad=None``, hyperopt's default): entropic mirror descent on a
    product of simplices, ``run(init_params, *args, **kwargs)``; every row of ``params``
    (shape ``(n_blocks, k)``) lies on ``{x >= 0, sum x = 1}`` and the update is
    ``x_i ← x_i ⊙ exp(-η ∇_i f) / Z_i``. Start from a strictly positive point (e.g. uniform
    rows). ``error`` and the implicit optimality condition are then the Euclidean
    projected-gradient fixed point (same solution, well defined on the boundary).

    ``stepsize`` is a float or a function of the iteration number. ``has_aux``: ``fun``
    returns ``(value, aux)``; ``state.aux`` is the ``aux`` of the last gradient evaluation.

    Example:
      >>> md = MirrorDescent(fun=svm_dual_objective, stepsize=0.5)
      >>> beta = md.run(jnp.full((n, k), 1 / k), X, Y, lam).params
    """

    fun: Callable
    projection_grad: Callable | None = None
    stepsize: float | Callable = 1.0
    has_aux: bool = False

    def _grad(self, params, *args, **kwargs):
        """``(∇fun(params), aux)`` (``aux`` None unless ``has_aux``)."""
        if self.has_aux:
            return jax.grad(self.fun, has_aux=True)(params, *args, **kwargs)
        return jax.grad(self.fun)(params, *args, **kwargs), None

    @staticmethod
    def make_projection_grad(projection: Callable, mapping_fun: Callable) -> Callable:
        """``projection_grad(x, g, stepsize, hp) = projection(mapping_fun(x) - stepsize g, hp)``.

        Example:
          >>> kl = lambda x, hp=None: jax.nn.softmax(x, -1)          # Bregman projection
          >>> pg = MirrorDescent.make_projection_grad(kl, lambda x: jnp.log(x) + 1)
        """
        def projection_grad(x, x_fun_grad, stepsize, hyperparams_proj):
            update = jax.tree.map(lambda m, g: m - stepsize * g, mapping_fun(x), x_fun_grad)
            return projection(update, hyperparams_proj)
        return projection_grad

    def _eta(self, iter_num):
        return self.stepsize(iter_num) if callable(self.stepsize) else self.stepsize

    def init_state(self, init_params, *args, **kwargs) -> MirrorDescentState:
        dtype = jnp.result_type(*jax.tree.leaves(init_params))
        count = lambda n: jnp.asarray(n, jnp.int32)
        aux = None
        if self.has_aux:  # as JAXopt: one evaluation at init for the aux's structure
            if self.projection_grad is not None:
                args = args[1:] if args else args
                kwargs = {k: v for k, v in kwargs.items() if k != "hyperparams_proj"}
            aux = self.fun(init_params, *args, **kwargs)[1]
        return MirrorDescentState(jnp.asarray(0), jnp.asarray(jnp.inf, dtype), aux,
                                  count(int(self.has_aux)), count(0), count(0),
                                  jnp.asarray(False))

    def update(self, params, state, *args, **kwargs) -> OptStep:
        eta = self._eta(state.iter_num)
        if self.projection_grad is None:
            grad, aux = self._grad(params, *args, **kwargs)
            tiny = jnp.finfo(params.dtype).tiny  # log(0) guard that exists in float32 too
            x = jax.nn.softmax(jnp.log(jnp.maximum(params, tiny)) - eta * grad, axis=-1)
            error = tree_norm(self.optimality_fun(x, *args, **kwargs))
        else:
            hyperparams_proj, *args = args if args else (kwargs.pop("hyperparams_proj", None),)
            grad, aux = self._grad(params, *args, **kwargs)
            x = self.projection_grad(params, grad, eta, hyperparams_proj)
            error = tree_norm(jax.tree.map(jnp.subtract, x, params)) / eta
        error = jnp.asarray(error, state.error.dtype)
        return OptStep(x, state._replace(iter_num=state.iter_num + 1, error=error, aux=aux,
                                         num_fun_eval=state.num_fun_eval + 1,
                                         num_grad_eval=state.num_grad_eval + 1,
                                         num_proj_eval=state.num_proj_eval + 1))

    def run(self, init_params, *args, **kwargs) -> OptStep:
        """``run(init_params, *args)``; with ``projection_grad``, JAXopt's
        ``run(init_params, hyperparams_proj=None, *args, **kwargs)``."""
        if self.projection_grad is not None and not args:
            args = (kwargs.pop("hyperparams_proj", None),)
        return super().run(init_params, *args, **kwargs)

    def optimality_fun(self, params, *args, **kwargs):
        if self.projection_grad is None:
            grad = self._grad(params, *args, **kwargs)[0]
            return jax.vmap(projection_lib.projection_simplex)(params - grad) - params
        hyperparams_proj, *args = args if args else (kwargs.pop("hyperparams_proj", None),)
        grad = self._grad(params, *args, **kwargs)[0]
        return jax.tree.map(jnp.subtract,
                            self.projection_grad(params, grad, 1.0, hyperparams_proj), params)

    @property
    def linear_solve(self) -> Callable:
        """With ``projection_grad``, GMRES by default: mirror maps such as ``log`` are infinite
        on the boundary of the domain, where iterates underflow to 0 (float32), so the dense
        materialization of ``solve_auto`` meets ``inf · 0``; a Krylov solve only multiplies
        by directions from the right-hand side, as JAXopt's default normal CG does."""
        if self.implicit_diff_solve is None and self.projection_grad is not None:
            return linear_solve_lib.solve_gmres
        return super().linear_solve

    def _reference_signature(self):
        if self.projection_grad is None:
            return None
        return lambda params, hyperparams_proj, *args, **kwargs: None
