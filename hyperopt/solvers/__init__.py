"""Iterative solvers whose ``run`` is differentiable implicitly or by unrolling."""

from hyperopt.solvers.base import ClosedForm, IterativeSolver, OptStep
from hyperopt.solvers.bfgs import BFGS
from hyperopt.solvers.block import BlockCoordinateDescent, CompositeLinearFunction, MirrorDescent
from hyperopt.solvers.coordinate_descent import CoordinateDescent
from hyperopt.solvers.gradient import GradientDescent, ProjectedGradient, ProximalGradient
from hyperopt.solvers.lbfgs import LBFGS
from hyperopt.solvers.nonlinear_cg import NonlinearCG

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
]
