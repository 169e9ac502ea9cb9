"""Builds the Cython extensions; everything else is declared in pyproject.toml."""
from setuptools import Extension, setup
from Cython.Build import cythonize
import numpy

extensions = [
    Extension("wwfast._cpio", ["wwfast/_cpio.pyx"]),
    Extension("wwfast._tftp", ["wwfast/_tftp.pyx"], include_dirs=[numpy.get_include()]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "embedsignature": True},   # help() and inspect see the signatures
    ),
)
