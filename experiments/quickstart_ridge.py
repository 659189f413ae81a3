"""The seed's ridge example, tuned: optimize the ridge penalty on diabetes with hypergradients.

    python experiments/quickstart_ridge.py

Library-only (no Hydra): GradientDescent solves the inner problem, ``jax.grad`` through
``run`` gives the hypergradient by implicit differentiation, and optax's adam updates
log λ. Prints the validation loss at every outer step.
"""

import jax
import jax.numpy as jnp
import optax

import hyperopt
from hyperopt.data import load_dataset

jax.config.update("jax_enable_x64", True)


def ridge_reg_objective(params, l2reg, X, y):
    residuals = jnp.dot(X, params) - y
    return jnp.mean(residuals ** 2) + 0.5 * l2reg * jnp.dot(params, params)


def main(steps: int = 30) -> float:
    data = load_dataset("diabetes", seed=0)
    gd = hyperopt.GradientDescent(fun=ridge_reg_objective, maxiter=500, implicit_diff=True)

    def validation_loss(log_l2reg, init_params):
        sol = gd.run(init_params, l2reg=jnp.exp(log_l2reg), X=data.X_train, y=data.y_train).params
        return jnp.mean((data.X_val @ sol - data.y_val) ** 2), sol

    @jax.jit
    def outer_step(log_l2reg, opt_state, init_params):
        (loss, sol), grad = jax.value_and_grad(validation_loss, has_aux=True)(log_l2reg, init_params)
        updates, opt_state = optimizer.update(grad, opt_state)
        return optax.apply_updates(log_l2reg, updates), opt_state, sol, loss

    optimizer = optax.adam(0.1)
    log_l2reg = jnp.log(1.0)
    opt_state = optimizer.init(log_l2reg)
    params = jnp.zeros(data.n_features)
    for step in range(steps):
        log_l2reg, opt_state, params, loss = outer_step(log_l2reg, opt_state, params)
        print(f"step {step:3d}  validation loss {float(loss):.6f}  l2reg {float(jnp.exp(log_l2reg)):.5f}")
    return float(loss)


if __name__ == "__main__":
    main()
