"""Only here to build the cffi extensions (atomics, FatFs); all metadata is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["sddf/_atomic_build.py:ffibuilder", "sddf/fs/_fatfs_build.py:ffibuilder"])
