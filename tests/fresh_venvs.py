"""Fresh virtual environments with one requirements file each, installed in the background.

pip spends most of a fresh install unpacking and writing wheels (the GPU wheel's 1.5 GB most of all), little of it
on the CPU: conftest starts each install when collection finds a test that needs it (under pytest-xdist, worker
gw0's collection, into a folder every worker shares), so it runs while the shared build trains, and the test waits
only for what is left.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO

# fixture name -> the requirements file its venv gets, and nothing else
FRESH_VENVS = {"demo_venv": "demo/requirements.txt", "gpu_venv": "demo/requirements-gpu.txt"}
# Installs run outside any test's limit (they start at collection); this bounds the wait for one.
INSTALL_WITHIN_S = 1800


class VenvInstall:
    """`python -m venv VENV` then `pip install -r REQUIREMENTS` into it, in a process started now, or (`started`
    False) one that another pytest-xdist worker started into the same shared folder. Its exit status lands in a
    file beside the venv, so any process can wait for it."""

    def __init__(self, venv: Path, requirements: str, started: bool = True):
        self.venv, self.log = venv, venv.parent / f"{venv.name}-install.log"
        self.status, self.process = venv.parent / f"{venv.name}-install.status", None
        if not started:
            return
        venv.parent.mkdir(parents=True, exist_ok=True)
        python = shlex.quote(str(venv / "bin" / "python"))
        script = f"{shlex.quote(sys.executable)} -m venv {shlex.quote(str(venv))} && " \
                 f"{python} -m pip install -q -r {shlex.quote(str(REPO / requirements))}"
        status = shlex.quote(str(self.status))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(["bash", "-c", f"({script}); echo $? > {status}.tmp && "
                                             f"mv {status}.tmp {status}"], stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> Path:
        """The venv, once installed; a failed install fails the test with pip's last words."""
        deadline = time.monotonic() + INSTALL_WITHIN_S
        while not self.status.is_file():
            assert time.monotonic() < deadline, f"installing {self.venv} took over {INSTALL_WITHIN_S} s"
            assert self.process is None or self.process.poll() is None or self.status.is_file(), \
                f"the install of {self.venv} died:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        code = int(self.status.read_text())
        assert code == 0, f"installing {self.venv} failed ({code}):\n{self.log.read_text()[-3000:]}"
        return self.venv

    def wait_quietly(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=INSTALL_WITHIN_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
