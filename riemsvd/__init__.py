"""riemsvd: the leading k singular triplets of a matrix by Riemannian optimization.

The public API is what this module re-exports; everything else is private and may move.
"""

import importlib

from riemsvd import nn
from riemsvd._bounds import NormBounds, norm_bounds
from riemsvd._distributed import ShardedMatrix
from riemsvd._linear import linear_operator
from riemsvd._result import (
    ConvergenceWarning,
    DegenerateSpectrumWarning,
    ResolutionWarning,
    SolveInfo,
    SVDResult,
)
from riemsvd._solve import solve
from riemsvd._subspace import SolverOptions

# geoopt (and through its optimizers scipy.optimize) is imported only by what needs it: 0.3 s of
# `import riemsvd` otherwise.
_LAZY = {
    "manifolds": ("riemsvd.manifolds", None),
    "optim": ("riemsvd.optim", None),
    "SingularPair": ("riemsvd._pair", "SingularPair"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'riemsvd' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value
    return value


__all__ = [
    "ConvergenceWarning",
    "DegenerateSpectrumWarning",
    "NormBounds",
    "ResolutionWarning",
    "SVDResult",
    "ShardedMatrix",
    "SingularPair",
    "SolveInfo",
    "SolverOptions",
    "manifolds",
    "linear_operator",
    "nn",
    "norm_bounds",
    "optim",
    "solve",
]
__version__ = "0.1.0"
