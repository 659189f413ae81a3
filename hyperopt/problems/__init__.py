"""Bilevel problems: inner objective, solver wiring, outer loss and metrics."""

from hyperopt.problems.base import InnerSolver, Problem
from hyperopt.problems.lasso import Lasso
from hyperopt.problems.logistic import Logistic
from hyperopt.problems.ridge import Ridge, RidgeCholesky

__all__ = ["InnerSolver", "Lasso", "Logistic", "Problem", "Ridge", "RidgeCholesky"]
