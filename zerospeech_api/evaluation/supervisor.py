"""Runs one evaluator so that none of its processes outlives it, a stop, or the worker.

The worker runs this file's source as `python -I -S -c SOURCE GRACE COMMAND...` (standard library
only, no import of the package). Its stdin is the read end of a pipe whose write end only the
worker holds: when the worker dies, even by SIGKILL, the kernel closes that end and this process
reads end-of-file. It is a child subreaper (Linux), so every orphaned descendant of the evaluator,
even one that left the evaluator's process group or session, becomes its child; each is killed
and reaped before this process exits. PR_SET_PDEATHSIG alone covers only a direct child.

- The evaluator runs in its own process group with stdin from /dev/null; its output goes to this
  process's stdout and stderr (the worker's log pipe).
- SIGTERM (the worker's stop: timeout or cancellation): SIGTERM to the evaluator's group, then
  SIGKILL to everything left after GRACE seconds.
- End-of-file on stdin (the worker is gone): SIGKILL to everything at once.
- When the evaluator exits on its own, whatever it left running is killed too.
- Exit status: the evaluator's (death by signal N is reproduced), 127 if it could not start.

`die_with_parent` is also the package's one way to tie a process to its parent (gunicorn workers
to their master, `dev`'s worker to `dev`): it lives here because this file can import nothing.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
NOT_STARTED = 127
WORKER_GONE = 137


def prctl(option: int, value: int) -> None:
    """Best effort: Linux only, and harmless to skip elsewhere."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def die_with_parent(parent: int, sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent `parent` dies, even by
    SIGKILL (Linux PR_SET_PDEATHSIG; nothing elsewhere); at once if it is already gone."""
    prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def children() -> list[int]:
    """This process's children (reparented orphans included), from /proc."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain anything: parse after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


def signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except OSError:  # already gone
        pass


def kill_all(group: int) -> None:
    """SIGKILL the evaluator's group and every child, round after round, until none is left."""
    while True:
        for kill, target in [(os.killpg, group)] + [(os.kill, pid) for pid in children()]:
            try:
                kill(target, signal.SIGKILL)
            except OSError:
                pass
        try:
            # Reaping one lets its own children (orphans now) come to us for the next round.
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def start(argv: list[str]) -> int:
    me = os.getpid()
    pid = os.fork()
    if pid == 0:  # the evaluator
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            die_with_parent(me, signal.SIGKILL)  # if this supervisor is killed
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"evaluator could not start: {exc}\n".encode())
        os._exit(NOT_STARTED)
    try:
        os.setpgid(pid, pid)  # also here, so the group exists before any signal is sent to it
    except OSError:
        pass
    return pid


def exit_like(status: int) -> None:
    """Exit with the evaluator's status; a death by signal is reproduced on this process."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, OSError, ValueError):
            pass
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        sys.exit(128 + sig)
    sys.exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    grace = float(sys.argv[1])
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    stopping: list[float] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(time.monotonic()))
    watch = sys.stdin.fileno()
    pid = start(sys.argv[2:])
    status: int | None = None
    stop_sent = False
    while status is None:
        ready, _, _ = select.select([watch], [], [], 0.1)
        if ready and not os.read(watch, 4096):
            kill_all(pid)
            sys.exit(WORKER_GONE)
        if stopping and not stop_sent:
            stop_sent = True
            signal_group(pid, signal.SIGTERM)
        if stopping and time.monotonic() - stopping[0] > grace:
            signal_group(pid, signal.SIGKILL)
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
    kill_all(pid)
    exit_like(status)


if __name__ == "__main__":
    main()
