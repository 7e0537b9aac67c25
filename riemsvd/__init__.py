"""riemsvd: the leading k singular triplets of a matrix by Riemannian optimization.

The public API is what this module re-exports; everything else is private and may move.
"""

from riemsvd import manifolds, nn
from riemsvd._bounds import NormBounds, norm_bounds
from riemsvd._distributed import ShardedMatrix
from riemsvd._linear import linear_operator
from riemsvd._pair import SingularPair
from riemsvd._result import ConvergenceWarning, DegenerateSpectrumWarning, SolveInfo, SVDResult
from riemsvd._solve import solve
from riemsvd._subspace import SolverOptions

__all__ = [
    "ConvergenceWarning",
    "DegenerateSpectrumWarning",
    "NormBounds",
    "SVDResult",
    "ShardedMatrix",
    "SingularPair",
    "SolveInfo",
    "SolverOptions",
    "manifolds",
    "linear_operator",
    "nn",
    "norm_bounds",
    "solve",
]
__version__ = "0.1.0"
