"""The C half steps of the CPU solver (riemsvd/_steps.c); everything else is in pyproject.toml.

Optional: where no C compiler is found, the install goes on and the solver runs their Python twins
(the same steps in numpy and BLAS calls, equal to rounding: about 1.2× the time of a 384×384 solve)."""

import sys

from setuptools import Extension, setup

# Vectorized sums over the vectors (reassociated, as BLAS's are; NaN and Inf keep their meaning):
# GCC and Clang spellings, which MSVC does not take.
FLAGS = (
    []
    if sys.platform == "win32"
    else ["-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros"]
)

setup(
    ext_modules=[
        Extension(
            "riemsvd._steps",
            sources=["riemsvd/_steps.c"],
            depends=["riemsvd/_steps_impl.h"],
            extra_compile_args=FLAGS,
            optional=True,
        )
    ]
)
