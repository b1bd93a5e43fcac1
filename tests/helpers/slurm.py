"""A throwaway single-node Slurm cluster (munged, slurmctld, slurmd) in a temp folder, as root.

The configuration is the one verified on these machines (../shared/recipes/slurm.md), with its
own munge socket and free ports, so it shares nothing with a system Slurm or another session.
Every process it starts is stopped by PID at the end; jobs still running are cancelled first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import free_port, wait_for

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this machine lacks (Debian `slurm-wlm`, `munge`)."""
    return [
        name
        for name in (*DAEMONS, *CLIENTS)
        if shutil.which(name) is None and shutil.which(name, path="/usr/sbin:/sbin") is None
    ]


def _binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


class SlurmCluster:
    """One node (this host), partition `debug`, 2 CPUs shared by up to 4 jobs each."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="zr-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.socket = self.root / "munge" / "sock"

    @property
    def env(self) -> dict[str, str]:
        """What a client (a worker, the tests) needs in its environment to use this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        root = self.root
        for folder in ("state", "spool", "log", "munge"):
            (root / folder).mkdir()
        (root / "munge").chmod(0o700)
        key = root / "munge" / "key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        self.conf.write_text(
            f"""ClusterName=zrtest
SlurmctldHost={self.node}
SlurmUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=2
MinJobAge=120
NodeName={self.node} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=30 State=UP OverSubscribe=FORCE:4
"""
        )
        (root / "cgroup.conf").write_text(
            "CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\nCgroupAutomount=no\n"
        )

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            cwd=self.root,
            timeout=60,
        )

    def start(self) -> None:
        self._write_config()
        munge = self.root / "munge"
        steps = [
            [
                _binary("munged"),
                "--force",
                f"--socket={self.socket}",
                f"--key-file={munge / 'key'}",
                f"--pid-file={munge / 'pid'}",
                f"--log-file={munge / 'log'}",
                f"--seed-file={munge / 'seed'}",
            ],
            [_binary("slurmctld"), "-i", "-f", str(self.conf)],
            [_binary("slurmd"), "-f", str(self.conf)],
        ]
        for argv in steps:
            done = self._run(*argv)
            if done.returncode != 0:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: {done.stderr}\n{self.logs()}")
        try:
            wait_for(self.idle, timeout=60, what="the Slurm node to be idle")
        except AssertionError:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"Slurm did not come up:\n{logs}") from None

    def idle(self) -> bool:
        """True once the node takes jobs."""
        done = self._run("sinfo", "--noheader", "--format=%T")
        return done.returncode == 0 and done.stdout.strip() in ("idle", "mixed", "allocated")

    def jobs(self) -> list[tuple[str, str, str]]:
        """Every job slurmctld knows: (id, name, state), finished ones included."""
        return _rows(self._run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T").stdout)

    def live_jobs(self) -> list[tuple[str, str, str]]:
        """The jobs pending or running (what an orphan would be)."""
        return _rows(self._run("squeue", "--noheader", "--format=%i|%j|%T").stdout)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.root / "log").glob("*.log"))
        )

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by PID."""
        if (self.root / "slurmctld.pid").exists():
            self._run("scancel", "--partition=debug")
            deadline = time.monotonic() + 15
            while self.live_jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/pid"):
            _stop_pid(self.root / pid_file)
        shutil.rmtree(self.root, ignore_errors=True)


def _rows(text: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.split():
        job_id, name, state = line.split("|", 2)
        rows.append((job_id, name, state))
    return rows


def _stop_pid(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session", name="slurm")
def slurm_fixture() -> Iterator[SlurmCluster]:
    """A running single-node Slurm for the session; skips on a laptop without Slurm or root,
    fails in CI (CI=true), where .ci/run installs it and runs as root."""
    from tests.conftest import missing_tool

    missing = missing_binaries()
    if missing:
        missing_tool(f"Slurm is not installed ({', '.join(missing)} missing)")
    if os.geteuid() != 0:
        missing_tool("the test Slurm cluster runs as root (SlurmUser=root)")
    cluster = SlurmCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
