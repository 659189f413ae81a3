"""Iterative solvers whose ``run`` is differentiable implicitly or by unrolling."""

from hyperopt.solvers.anderson import AndersonAcceleration
from hyperopt.solvers.base import ClosedForm, IterativeSolver, OptStep
from hyperopt.solvers.bfgs import BFGS
from hyperopt.solvers.bisection import Bisection
from hyperopt.solvers.block import BlockCoordinateDescent, CompositeLinearFunction, MirrorDescent
from hyperopt.solvers.coordinate_descent import CoordinateDescent
from hyperopt.solvers.fixed_point_iteration import FixedPointIteration
from hyperopt.solvers.gradient import GradientDescent, ProjectedGradient, ProximalGradient
from hyperopt.solvers.lbfgs import LBFGS
from hyperopt.solvers.nonlinear_cg import NonlinearCG
from hyperopt.solvers.optax_solver import OptaxSolver
from hyperopt.solvers.scipy_wrappers import (
    ScipyBoundedLeastSquares,
    ScipyBoundedMinimize,
    ScipyLeastSquares,
    ScipyMinimize,
    ScipyRootFinding,
)

__all__ = [
    "BFGS",
    "LBFGS",
    "BlockCoordinateDescent",
    "ClosedForm",
    "CompositeLinearFunction",
    "CoordinateDescent",
    "GradientDescent",
    "IterativeSolver",
    "MirrorDescent",
    "NonlinearCG",
    "OptStep",
    "ProjectedGradient",
    "ProximalGradient",
    # fixed points, root finding, optax and scipy (issue #10)
    "AndersonAcceleration",
    "Bisection",
    "FixedPointIteration",
    "OptaxSolver",
    "ScipyBoundedLeastSquares",
    "ScipyBoundedMinimize",
    "ScipyLeastSquares",
    "ScipyMinimize",
    "ScipyRootFinding",
]
