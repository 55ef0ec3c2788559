"""Test-only components, imported by dotted path ("components.basic:Thing").

A test that names them calls :func:`importable` first, so that both the test process and the
PD processes it starts (which inherit its environment) can import this package.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent


def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put tests/ on sys.path here and on PYTHONPATH for processes started by this test."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), inherited])))
