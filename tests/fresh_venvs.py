"""Fresh virtual environments with one requirements file each, installed in the background.

pip spends most of a fresh install unpacking and writing wheels (a minute for demo/requirements.txt, more for the
GPU wheel's 1.5 GB), little of it on the CPU: conftest starts each install when collection finds a test that
needs it, so it runs while the shared build trains, and the test waits only for what is left.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

# fixture name -> the requirements file its venv gets, and nothing else
FRESH_VENVS = {"demo_venv": "demo/requirements.txt", "gpu_venv": "demo/requirements-gpu.txt"}
# Installs run outside any test's limit (they start at collection); this bounds the wait for one.
INSTALL_WITHIN_S = 1800


class VenvInstall:
    """`python -m venv VENV` then `pip install -r REQUIREMENTS` into it, in a process started now."""

    def __init__(self, venv: Path, requirements: str):
        venv.parent.mkdir(parents=True, exist_ok=True)
        self.venv, self.log = venv, venv.parent / f"{venv.name}-install.log"
        python = shlex.quote(str(venv / "bin" / "python"))
        script = f"{shlex.quote(sys.executable)} -m venv {shlex.quote(str(venv))} && " \
                 f"{python} -m pip install -q -r {shlex.quote(str(REPO / requirements))}"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> Path:
        """The venv, once installed; a failed install fails the test with pip's last words."""
        code = self.process.wait(timeout=INSTALL_WITHIN_S)
        assert code == 0, f"installing {self.venv} failed ({code}):\n{self.log.read_text()[-3000:]}"
        return self.venv

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
