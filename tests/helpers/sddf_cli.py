"""Running the installed ``sddf`` command from tests, as a user would."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDDF = str(Path(sys.executable).with_name("sddf"))
REPO = Path(__file__).resolve().parents[2]


def sddf(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``sddf ARGS`` from the repository root to completion, capturing its output as text."""
    return subprocess.run([SDDF, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
