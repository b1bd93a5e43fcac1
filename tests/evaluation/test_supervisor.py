"""die_with_parent (evaluation/supervisor.py), the one way a process is tied to its parent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.processes import process_alive, wait_for

# A parent that forks a child tying itself to the parent; prints the child's pid. `early`: the
# parent is killed by SIGKILL once the child is tied. `late`: the parent exits before the child
# ties itself (the race gunicorn's post_fork and dev's preexec_fn close).
FAMILY = """
import os, signal, sys, time
from zerospeech_api.evaluation.supervisor import die_with_parent
mode = sys.argv[1]
parent = os.getpid()
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    if mode == "late":
        while os.getppid() == parent:
            time.sleep(0.01)
    die_with_parent(parent, signal.SIGTERM)
    os.write(ready_w, b"x")
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
if mode == "late":
    os._exit(0)
os.read(ready_r, 1)
os.kill(parent, signal.SIGKILL)
"""


@pytest.mark.parametrize("mode", ["early", "late"])
def test_a_child_dies_with_its_parent(mode: str) -> None:
    family = subprocess.run(
        [sys.executable, "-c", FAMILY, mode], capture_output=True, text=True, timeout=60
    )
    child = int(family.stdout.split()[0])
    try:
        wait_for(lambda: not process_alive(child), timeout=20, what=f"child {child} to die")
    finally:
        if process_alive(child):
            subprocess.run(["kill", "-9", str(child)], check=False)
