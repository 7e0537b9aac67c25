"""riemsvd: the leading k singular triplets of a matrix by Riemannian optimization.

The public API is what this module re-exports; everything else is private and may move.
"""

from riemsvd import manifolds, nn
from riemsvd._distributed import ShardedMatrix
from riemsvd._pair import SingularPair
from riemsvd._result import ConvergenceWarning, DegenerateSpectrumWarning, SolveInfo, SVDResult
from riemsvd._solve import solve
from riemsvd._subspace import SolverOptions

__all__ = [
    "ConvergenceWarning",
    "DegenerateSpectrumWarning",
    "SVDResult",
    "ShardedMatrix",
    "SingularPair",
    "SolveInfo",
    "SolverOptions",
    "manifolds",
    "nn",
    "solve",
]
__version__ = "0.1.0"
