"""Loading a system file: a bad one gives one clear line (never a raw traceback), and a package
beside it is importable by its PDs, as it would be for ``python system.py``."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers.sddf_cli import REPO, SDDF

pytestmark = pytest.mark.timeout(60)

ECHO = '''\
from dataclasses import dataclass

from sddf.component import Component


@dataclass
class EchoConfig:
    peer: int


class Echo(Component):
    Config = EchoConfig

    def init(self) -> None:
        print(f"echo {self.name}: up, peer {self.config.peer}", flush=True)

    def notified(self, ch: int) -> None:
        pass
'''


def sddf_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sddf ARGS`` run from ``cwd``, with no PYTHONPATH of the test's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([SDDF, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env)


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused system file printed (failing on a traceback or more lines)."""
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "mysys.py").write_text("from sddf.system import SystemDescription\n\ndef system(:\n    pass\n")
    assert one_line(sddf_in(tmp_path, "check", "mysys.py")) == "sddf: mysys.py:3: invalid syntax"


@pytest.mark.parametrize("spec", ["system.xml", "./system.xml", "ABSOLUTE"])
def test_a_file_that_is_not_python_is_named(tmp_path: Path, spec: str) -> None:
    (tmp_path / "system.xml").write_text('<?xml version="1.0"?>\n<system/>\n')
    spec = str(tmp_path / "system.xml") if spec == "ABSOLUTE" else spec
    line = one_line(sddf_in(tmp_path, "check", spec))
    assert line.startswith(f"sddf: {spec}") and "not a Python system file" in line, line


@pytest.mark.parametrize(("body", "expected"), [
    ("x = 1\n", "defines no system() function"),
    ("system = 3\n", "defines no system() function"),
    ("def system():\n    return 3\n", "system() returned int, not a SystemDescription"),
], ids=["missing", "not a function", "wrong type"])
def test_a_system_function_that_is_missing_or_wrong_is_named(tmp_path: Path, body: str, expected: str) -> None:
    (tmp_path / "mysys.py").write_text(body)
    line = one_line(sddf_in(tmp_path, "check", "mysys.py"))
    assert line.startswith("sddf: mysys.py") and expected in line, line


def test_a_module_the_system_file_cannot_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "mysys.py").write_text("import no_such_module\n")
    line = one_line(sddf_in(tmp_path, "check", "mysys.py"))
    assert line.startswith("sddf: mysys.py") and "no module named 'no_such_module'" in line, line
    assert f"looked in: {tmp_path}" in line, line


# ---- the README's example: mysystem.py beside its package mypkg ---------------------------------
@pytest.fixture
def readme_example(tmp_path: Path) -> Path:
    """The README's mysystem.py, with a mypkg/echo.py beside it; returns the system file."""
    readme = (REPO / "README.md").read_text()
    [source] = re.findall(r"```python\n(# mysystem\.py\n.*?)```", readme, re.DOTALL)
    system_file = tmp_path / "example" / "mysystem.py"
    (system_file.parent / "mypkg").mkdir(parents=True)
    system_file.write_text(source)
    (system_file.parent / "mypkg" / "__init__.py").write_text("")
    (system_file.parent / "mypkg" / "echo.py").write_text(ECHO)
    return system_file


@pytest.mark.parametrize("command", ["check", "xml", "graph"])
def test_a_package_beside_the_system_file_is_importable(readme_example: Path, command: str) -> None:
    run = sddf_in(REPO, command, str(readme_example))
    assert run.returncode == 0, run.stderr


def test_the_pds_of_sddf_run_import_a_package_beside_the_system_file(readme_example: Path, tmp_path: Path) -> None:
    run = sddf_in(REPO, "run", str(readme_example), "--duration", "1", "--run-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "echo a: up, peer 0" in run.stdout and "echo b: up, peer 0" in run.stdout, run.stdout + run.stderr
    assert "faulted" not in run.stderr, run.stderr


def test_a_program_module_that_is_missing_says_where_it_looked(readme_example: Path) -> None:
    readme_example.write_text(readme_example.read_text().replace("mypkg.echo:Echo", "mypkg.missing:Echo"))
    run = sddf_in(REPO, "check", str(readme_example))
    assert run.returncode == 2
    assert "no module named 'mypkg.missing'" in run.stderr and f"looked in: {readme_example.parent}" in run.stderr
