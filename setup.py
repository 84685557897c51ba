"""Build of the compiled engine.

Release build (default): ``-O2``, bounds checks on except where a function turns
them off (each such function is covered by the property tests), no fast-math and
no ``-march=native`` so results are bit-stable across machines.
``KATO_DEBUG=1``: Cython annotate/linetrace, ``-O0 -g``, ``CYTHON_TRACE_NOGIL``.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("KATO_DEBUG") == "1"
MODULES = ("symbols", "patterns", "matching", "metrics", "predict")

compile_args = ["-O0", "-g"] if DEBUG else ["-O2"]
macros = [("CYTHON_TRACE_NOGIL", "1"), ("KATO_ENGINE_DEBUG", "1")] if DEBUG else []

extensions = [
    Extension(
        f"engine.{name}",
        [f"engine/{name}.pyx"],
        language="c++",
        extra_compile_args=compile_args + ["-std=c++17"],
        define_macros=macros,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "linetrace": DEBUG,
        },
        annotate=DEBUG,
        nthreads=int(os.environ.get("KATO_BUILD_JOBS", "2")),
    ),
)
