"""Builds linklens' compiled modules (index/*.pyx, Cython); everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILED = ("index.bm25_top",)

setup(
    ext_modules=cythonize(
        [Extension(name, [name.replace(".", "/") + ".pyx"], extra_compile_args=["-O3"]) for name in COMPILED],
        compiler_directives={"language_level": "3"},
    )
)
