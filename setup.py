"""Only here to build the cffi atomics extension; all metadata is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["sddf/_atomic_build.py:ffibuilder"])
