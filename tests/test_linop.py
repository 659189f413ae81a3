"""Tests of hyperopt.linop: the sparse operator against scipy/numpy, and dense and sparse
matrices agreeing through every function, under jit, vmap and forward/reverse mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

import hyperopt
from hyperopt import linop
from hyperopt.linop import SparseMatrix

RTOL = 1e-10


def _matrix(n=40, p=25, density=0.15, seed=0):
    """A random CSR matrix with an empty row and an empty column (both allowed)."""
    A = scipy.sparse.random(n, p, density=density, format="lil", random_state=seed)
    A[3, :] = 0.0
    A[:, 7] = 0.0
    A = A.tocsr()
    A.eliminate_zeros()
    return A


@pytest.fixture(scope="module")
def pair():
    """The same matrix as a SparseMatrix and as a dense jax array, and scipy's CSR."""
    A = _matrix()
    return SparseMatrix.from_scipy(A), jnp.asarray(A.toarray()), A


def _close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol,
                               atol=rtol * np.max(np.abs(expected)))


def test_from_scipy_stores_one_entry_per_position_in_row_major_order():
    # duplicates add up, as in scipy; the input is not modified
    coo = scipy.sparse.coo_matrix(([1.0, 2.0, 5.0, 3.0], ([1, 0, 1, 0], [2, 1, 2, 0])), shape=(2, 3))
    X = SparseMatrix.from_scipy(coo)
    assert X.shape == (2, 3) and X.nnz == 3 and X.rows_sorted and X.dtype == jnp.float64
    np.testing.assert_array_equal(X.rows, [0, 0, 1])
    np.testing.assert_array_equal(X.cols, [0, 1, 2])
    np.testing.assert_array_equal(X.values, [3.0, 2.0, 6.0])
    np.testing.assert_array_equal(X.todense(), [[3.0, 2.0, 0.0], [0.0, 0.0, 6.0]])
    assert (X.to_scipy() != coo.tocsr()).nnz == 0
    assert X.nbytes == 3 * (8 + 4 + 4)
    assert SparseMatrix.from_scipy(coo, np.float32).dtype == jnp.float32


@pytest.mark.parametrize("k", [None, 3])
def test_products_match_scipy(pair, k):
    X, _, A = pair
    rng = np.random.default_rng(1)
    v = rng.normal(size=(A.shape[1],) if k is None else (A.shape[1], k))
    u = rng.normal(size=(A.shape[0],) if k is None else (A.shape[0], k))
    _close(X @ v, A @ v)
    _close(X.T @ u, A.T @ u)
    _close(linop.matvec(X, v), A @ v)
    _close(linop.rmatvec(X, u), A.T @ u)
    _close(u.T @ X, u.T @ A)  # a numpy array on the left calls X.__rmatmul__
    _close(jnp.asarray(u.T) @ X, u.T @ A)
    assert (X @ v).shape == ((A.shape[0],) if k is None else (A.shape[0], k))


def test_norms_and_scalings_match_numpy(pair):
    X, D, A = pair
    dense = A.toarray()
    w = np.random.default_rng(2).uniform(0.5, 2.0, A.shape[0])
    s = np.random.default_rng(3).normal(size=A.shape[1])
    for M in (X, D):
        _close(linop.column_sq_norms(M), (dense ** 2).sum(0))
        _close(linop.column_sq_norms(M, w), np.diag(dense.T @ np.diag(w) @ dense))
        _close(linop.row_sq_norms(M), (dense ** 2).sum(1))
        _close(linop.todense(linop.scale_rows(M, w)), w[:, None] * dense)
        _close(linop.todense(linop.scale_columns(M, s)), dense * s)
        assert linop.is_sparse(linop.scale_rows(M, w)) == linop.is_sparse(M)
    assert linop.nnz(X) == A.nnz and linop.nnz(D) == A.shape[0] * A.shape[1]
    assert linop.nbytes(D) == A.shape[0] * A.shape[1] * 8


@pytest.mark.parametrize("k", [1, 3])
def test_column_sq_norms_with_a_weight_column_per_output(pair, k):
    X, D, A = pair
    dense = A.toarray()
    W = np.random.default_rng(4).uniform(0.5, 2.0, (A.shape[0], k))
    for M in (X, D):
        got = linop.column_sq_norms(M, W)
        assert got.shape == (A.shape[1], k)
        _close(got, (dense ** 2).T @ W)
        _close(jax.vmap(linop.column_sq_norms, in_axes=(None, 1), out_axes=1)(M, W), (dense ** 2).T @ W)


@pytest.mark.parametrize("weights", [None, (4000,), (4000, 1), (4000, 3)])
def test_dense_column_sq_norms_stores_no_squared_copy(weights):
    """``X ** 2`` would be an (n, p) temporary in every Hessian-diagonal evaluation (the logistic
    step on 10⁵ × 10³ had 462 MiB of XLA temporaries): the compiled reduction holds none."""
    X = jnp.ones((4000, 250))
    args = (X,) if weights is None else (X, jnp.ones(weights))
    compiled = jax.jit(linop.column_sq_norms).lower(*args).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < X.nbytes / 20


def test_logistic_hessian_diagonal_on_dense_data_stores_no_squared_copy():
    from hyperopt.problems.logistic import hessian_diagonal

    X = jnp.asarray(np.random.default_rng(0).normal(size=(4000, 250)))
    params = {"W": jnp.zeros((250, 1)), "b": jnp.zeros(1)}
    y, sw = jnp.zeros(4000), jnp.ones(4000)
    compiled = jax.jit(hessian_diagonal).lower(params, 0.1, X, y, sw).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < X.nbytes / 20

@jax.jit
def _tight_spectral_norm(M):
    return linop.spectral_norm(M, tol=1e-15, maxiter=2000)


def test_spectral_norm_by_power_iteration(pair):
    X, D, A = pair
    exact = np.linalg.norm(A.toarray(), 2)
    loose_norm = jax.jit(linop.spectral_norm)
    for M in (X, D):
        _close(_tight_spectral_norm(M), exact)
        loose = float(loose_norm(M))  # default tol 1e-6: from below, close
        assert exact * (1 - 1e-5) < loose <= exact * (1 + 1e-12)
    assert float(loose_norm(jnp.zeros((4, 3)))) == 0.0


def test_rows_columns_and_concatenation(pair):
    X, D, A = pair
    dense = A.toarray()
    rows = np.array([5, 0, 3, 5, 39])
    cols = jnp.array([7, 0, 24, 3])
    for M in (X, D):
        taken = linop.take_rows(M, rows)
        assert linop.is_sparse(taken) == linop.is_sparse(M)
        np.testing.assert_array_equal(linop.todense(taken), dense[rows])
        np.testing.assert_array_equal(linop.dense_columns(M, cols), dense[:, np.asarray(cols)])
        stacked = jax.jit(linop.concat_rows)([M, linop.take_rows(M, rows)])
        np.testing.assert_array_equal(linop.todense(stacked), np.vstack([dense, dense[rows]]))
    # traced column indices of static length (a working set inside a jitted solver)
    picked = jax.jit(lambda M, c: linop.dense_columns(M, c))(X, cols[::-1])
    np.testing.assert_array_equal(picked, dense[:, np.asarray(cols[::-1])])
    with pytest.raises(ValueError, match="all dense or all sparse"):
        linop.concat_rows([X, D])
    with pytest.raises(ValueError, match=r"same number of columns, got \[3, 25\]"):
        linop.concat_rows([X, SparseMatrix.from_scipy(scipy.sparse.eye(2, 3))])


def test_is_a_pytree_through_jit_and_vmap_broadcast(pair):
    X, D, A = pair
    assert len(jax.tree_util.tree_leaves(X)) == 3
    doubled = jax.jit(lambda M: jax.tree.map(lambda a: 2 * a if a.dtype == jnp.float64 else a, M))(X)
    assert isinstance(doubled, SparseMatrix) and doubled.shape == X.shape
    _close(doubled.todense(), 2 * A.toarray())
    V = np.random.default_rng(4).normal(size=(6, A.shape[1]))
    batched = jax.vmap(lambda M, v: M @ v, in_axes=(None, 0))(X, V)
    _close(batched, (A @ V.T).T)


def _loss(w, X, y, sw):
    """A weighted logistic loss through both products."""
    z = X @ w
    return jnp.sum(sw * (jnp.logaddexp(0.0, z) - y * z)) / jnp.sum(sw) + 0.1 * jnp.sum((X.T @ sw) * w) ** 2


def _multinomial_loss(W, X, labels, sw):
    """Weighted softmax cross-entropy with K = 3 columns (the (p, K) products)."""
    logits = X @ W
    ce = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
    return jnp.sum(sw * ce) / jnp.sum(sw)


def test_derivatives_through_the_operator_match_dense(pair):
    X, D, A = pair
    rng = np.random.default_rng(5)
    n, p = A.shape
    w, y, sw = rng.normal(size=p), (rng.random(n) < 0.5).astype(float), rng.uniform(0.5, 1.5, n)
    dw, s = rng.normal(size=p), rng.uniform(0.5, 2.0, p)
    W, dW, labels = rng.normal(size=(p, 3)), rng.normal(size=(p, 3)), rng.integers(0, 3, n)

    @jax.jit
    def derivatives(M):
        grad = jax.grad(_loss)(w, M, y, sw)
        jvp = jax.jvp(lambda w: _loss(w, M, y, sw), (w,), (dw,))[1]  # forward mode
        hvp = jax.jvp(lambda w: jax.grad(_loss)(w, M, y, sw), (w,), (dw,))[1]  # fwd over rev
        d_weights = jax.grad(_loss, argnums=3)(w, M, y, sw)
        d_scaling = jax.grad(lambda s: _loss(w, linop.scale_columns(M, s), y, sw))(s)
        grad_K = jax.grad(_multinomial_loss)(W, M, labels, sw)
        hvp_K = jax.jvp(lambda W: jax.grad(_multinomial_loss)(W, M, labels, sw), (W,), (dW,))[1]
        return grad, jvp, hvp, d_weights, d_scaling, grad_K, hvp_K

    for sparse, dense in zip(derivatives(X), derivatives(D), strict=True):
        _close(sparse, dense)


def test_gradients_under_vmap_over_fold_weights(pair):
    """k-fold CV: the data broadcast (in_axes=None), one weight vector per fold."""
    X, D, A = pair
    rng = np.random.default_rng(6)
    n, p = A.shape
    w, y = rng.normal(size=p), (rng.random(n) < 0.5).astype(float)
    folds = rng.permutation(n) % 4
    weights = (folds[None, :] != np.arange(4)[:, None]).astype(float)  # (4, n) training masks
    per_fold = jax.jit(jax.vmap(jax.grad(_loss), in_axes=(None, None, None, 0)))
    sparse, dense = per_fold(w, X, y, weights), per_fold(w, D, y, weights)
    assert sparse.shape == (4, p)
    _close(sparse, dense)
    _close(sparse[2], jax.grad(_loss)(w, D, y, weights[2]))


def test_implicit_hypergradient_through_custom_root_matches_dense(pair):
    """The operator is an argument of a solver run under hyperopt's implicit rule (its
    int32 index leaves get float0 cotangents); the hypergradient equals the dense one."""
    X, D, A = pair
    rng = np.random.default_rng(7)
    y = A @ rng.normal(size=A.shape[1]) + 0.1 * rng.normal(size=A.shape[0])
    sw = jnp.ones(A.shape[0])

    def ridge(w, lam, X, y, sw):
        return 0.5 * jnp.sum(sw * (X @ w - y) ** 2) / jnp.sum(sw) + 0.5 * lam * jnp.sum(w ** 2)

    lam = 0.05
    lipschitz = float(_tight_spectral_norm(X)) ** 2 / A.shape[0] + lam  # of ∇ridge
    solver = hyperopt.GradientDescent(fun=ridge, stepsize=1.0 / lipschitz, acceleration=True,
                                      tol=1e-12, maxiter=20_000)

    def val_loss(log_lam, M):
        w = solver.run(jnp.zeros(A.shape[1]), jnp.exp(log_lam), M, y, sw).params
        return jnp.sum((M @ w - y) ** 2)

    hypergrad = jax.jit(jax.grad(val_loss))
    g_sparse, g_dense = hypergrad(jnp.log(lam), X), hypergrad(jnp.log(lam), D)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-8)
    # and it is the derivative: a central difference of the exact ridge solution
    dense = A.toarray()

    def exact(log_lam):
        lam = np.exp(log_lam)
        w = np.linalg.solve(dense.T @ dense / len(y) + lam * np.eye(dense.shape[1]), dense.T @ y / len(y))
        return np.sum((dense @ w - y) ** 2)

    h = 1e-5
    np.testing.assert_allclose(g_sparse, (exact(np.log(lam) + h) - exact(np.log(lam) - h)) / (2 * h),
                               rtol=1e-6)


def test_errors_name_the_bad_value(pair):
    X, _, _ = pair
    with pytest.raises(ValueError, match=r"shape \(40, 25\) @ operand of shape \(24,\): need \(25,\)"):
        X @ jnp.ones(24)
    with pytest.raises(TypeError, match=r"not converted to a dense array implicitly; use "
                                        r"hyperopt\.linop\.todense"):
        np.asarray(X)
    with pytest.raises(TypeError, match="not subscriptable"):
        X[0]
