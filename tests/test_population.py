"""Populations: K starting points in one vmapped program; member i is the single run started
at its initialization (the separate runs are the reference), frozen members do not move."""

import functools
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperopt
from hyperopt.bilevel import Bilevel, OuterState, fit
from hyperopt.data import load_dataset
from hyperopt.outer import lbfgs_backtracking
from hyperopt.population import best_member, member_factors, member_inits
from hyperopt.problems import Distillation, Ridge

FACTORS = (0.01, 100.0)


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes", seed=0)


TOL = 1e-10  # the inner (and final) tolerance


def _bilevel(init_l2reg=1.0, optimizer=None):
    return Bilevel(Ridge(init_l2reg=init_l2reg), functools.partial(hyperopt.LBFGS, tol=TOL),
                   optimizer or lbfgs_backtracking(), cv_folds=0)


def test_member_factors_are_log_even_and_cover_the_range():
    f = member_factors(4, FACTORS)
    np.testing.assert_allclose(f, [0.01, 10 ** (-2 / 3), 10 ** (2 / 3), 100.0], rtol=1e-14)
    assert member_factors(1, FACTORS).tolist() == [1.0]  # one member: the problem's own start
    with pytest.raises(ValueError, match=r"population_range=\[1.0, 0.1\]; allowed"):
        member_factors(2, (1.0, 0.1))


def test_best_member_breaks_near_ties_by_member_order():
    state = lambda loss, final=True: OuterState(step=3, theta=0.0, opt_state=None, inner_params=None,
                                                best_theta=0.0, best_loss=loss, best_step=2,
                                                step_scale=1.0, best_at_final=final)
    states = [state(1.0 + 3e-10), state(1.0 + 5e-11), state(1.0), state(0.5, final=False)]
    assert best_member(states) == 2  # strict: the lowest loss at the final tolerance
    assert best_member(states, 1e-10) == 1  # within 1e-10 of the lowest: a tie, the first wins
    assert best_member(states, 1e-9) == 0
    assert best_member([state(math.inf, final=False)] * 2, 1e-10) == 0  # no step yet


def test_random_starts_differ_by_seed():
    data = load_dataset("digits", seed=0)
    problem = Distillation(seed=3)
    inits = member_inits(problem, data, 3)
    for i, theta in enumerate(inits):
        np.testing.assert_array_equal(theta, Distillation(seed=3 + i).init_hparams(data))
    assert not np.array_equal(inits[0], inits[1])


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_population_of_4_equals_4_separate_runs(diabetes, optimizer):
    make_opt = (lambda: lbfgs_backtracking()) if optimizer == "lbfgs" else (lambda: optax.adam(0.3))
    rows = []
    steps = 30 if optimizer == "lbfgs" else 12
    popn = fit(_bilevel(optimizer=make_opt()), diabetes, steps=steps, population=4, population_range=FACTORS,
               callback=lambda states, row: rows.append(row))
    factors = np.geomspace(*FACTORS, 4)
    singles = [fit(_bilevel(init_l2reg=f, optimizer=make_opt()), diabetes, steps=steps) for f in factors]
    assert len(popn.members) == 4 and len(popn.population) == 4
    for i, (member, single) in enumerate(zip(popn.members, singles, strict=True)):
        info = popn.population[i]
        assert info["initial_hparams"]["l2reg"] == pytest.approx(factors[i], rel=1e-12)
        # the same path: best and final hyperparameters, the best loss and the number of steps
        # (a member that stopped early is frozen: its step count is the single run's)
        np.testing.assert_allclose(info["best_hparams"]["l2reg"], single.best_hparams["l2reg"], rtol=1e-6)
        np.testing.assert_allclose(np.exp(member.theta), np.exp(single.state.theta), rtol=1e-6)
        assert info["best_loss"] == pytest.approx(single.state.best_loss, rel=1e-9)
        assert (member.step, member.best_step, info["status"]) == (single.state.step,
                                                                   single.state.best_step, single.status)
    # the run keeps the best member, refit there: the separate runs' best by the same rule
    # (best losses within the final inner tol, relative, are ties: here every member reaches
    # the same λ, and their losses differ by the inner solves' noise alone)
    best = best_member([s.state for s in singles], TOL)
    assert popn.best_member == best == best_member(popn.members, TOL)
    np.testing.assert_allclose(popn.model, singles[best].model, rtol=1e-6)
    assert popn.model_metrics["test_loss"] == pytest.approx(singles[best].model_metrics["test_loss"], rel=1e-6)
    assert [r["outer_loss"] for r in popn.history] == pytest.approx(
        [r["outer_loss"] for r in singles[best].history], rel=1e-9)
    # one metrics row per population step, with every member's loss (None once frozen)
    steps = [s.state.step for s in singles]
    assert len(rows) == max(steps) and [r["step"] for r in rows] == list(range(max(steps)))
    for t, row in enumerate(rows):
        for i, single in enumerate(singles):
            loss = row["member_outer_loss"][i]
            if t < steps[i]:
                assert loss == pytest.approx(single.history[t]["outer_loss"], rel=1e-9)
            else:
                assert loss is None and not row["member_active"][i]
    if optimizer == "lbfgs":  # the members stop at different steps: freezing is tested
        assert len(set(steps)) > 1 and all(s.status == "converged" for s in singles), steps
    assert popn.status == ("converged" if all(s.status == "converged" for s in singles) else "completed")


def test_population_of_distillation_members_is_the_seeded_runs():
    """Random starts: member i is the run of Distillation(seed=i)."""
    data = load_dataset("digits", seed=0, dtype="float64")
    make = lambda seed: Bilevel(Distillation(seed=seed), functools.partial(hyperopt.LBFGS, maxiter=50),
                                optax.adam(0.05))
    popn = fit(make(0), data, steps=3, population=2, stop=None)
    for seed in (0, 1):
        single = fit(make(seed), data, steps=3, stop=None)
        np.testing.assert_allclose(popn.members[seed].theta, single.state.theta, rtol=1e-6, atol=1e-9)


def test_population_resumes_from_its_members(diabetes):
    full = fit(_bilevel(), diabetes, steps=12, population=3, stop=None)
    first = fit(_bilevel(), diabetes, steps=5, population=3, stop=None)
    resumed = fit(_bilevel(), diabetes, steps=12, population=3, stop=None, state=first.members)
    for a, b in zip(resumed.members, full.members, strict=True):
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-9)
    with pytest.raises(ValueError, match="population=2 but the state to resume from has 3"):
        fit(_bilevel(), diabetes, steps=12, population=2, state=first.members)


def test_population_argument_is_checked(diabetes):
    with pytest.raises(ValueError, match=r"population=0; allowed: a positive integer"):
        fit(_bilevel(), diabetes, steps=1, population=0)
    assert jnp.isfinite(fit(_bilevel(), diabetes, steps=1, population=1).state.best_loss)
