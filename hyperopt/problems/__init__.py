"""Bilevel problems: inner objective, solver wiring, outer loss and metrics."""

from hyperopt.problems.base import InnerSolver, Problem
from hyperopt.problems.distillation import Distillation
from hyperopt.problems.lasso import Lasso
from hyperopt.problems.logistic import Logistic
from hyperopt.problems.ridge import Ridge, RidgeCholesky
from hyperopt.problems.svm_dual import SVMDual

__all__ = ["Distillation", "InnerSolver", "Lasso", "Logistic", "Problem", "Ridge", "RidgeCholesky", "SVMDual"]
