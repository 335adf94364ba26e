"""Start processes and stop exactly those: never signal a process you cannot prove you started.

Taught in notebook 08, §6 (the deployment's processes); the browser tests use it too.

A process id (pid) is reused once its process has ended, and on a shared machine the new owner
may be anybody. So every process is remembered as a ``ProcessId``: its pid *and* its start time
(from ``/proc/<pid>/stat`` on Linux, from ``ps -o lstart`` elsewhere). A signal is sent only to a
process whose pid still has that start time; on Linux the check and the signal go through one
``pidfd``, so the pid cannot be reused between them.

``Supervisor`` starts commands, each in a session (and process group) of its own, and learns the
processes they start in turn, each time it looks (``running()``): everything below a process it
knows, and every process in a session it opened that started before the last time it saw that
session's first process alive. (A helper whose parent exited is re-parented to PID 1 but stays in
its session. A session id is the pid of the process that opened it, and cannot be given to a new
process while anyone is still in the session; while our process lived, the session was ours.)
``stop_all`` sends SIGTERM, waits, then SIGKILL, to those processes only, one by one; it never
signals a whole process group (whose leader may be long gone, and its id reused).

``available_memory_mb`` says how much memory is left to start processes in (a container's or
Binder's limit included): notebook 08 checks it before it starts Ray or a deployment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessId", "process_table", "children_of", "descendants_of", "stop_processes", "signals_held", "Supervisor",
           "available_memory_mb"]

_PROC = Path("/proc")


@dataclass(frozen=True)
class _Row:
    ppid: int
    state: str
    start_time: str
    sid: int
    command: str


def _proc_row(pid: int) -> _Row | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ")"
    try:
        command = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    # fields: state, ppid, pgrp, session, ..., starttime (field 22 of stat, index 19 here)
    return _Row(int(fields[1]), fields[0], fields[19], int(fields[3]), command.strip())


def process_table() -> dict[int, _Row]:
    """Every process on the machine: pid -> (ppid, state, start_time, sid, command).

    Read from /proc on Linux (slim containers often have no ``ps``), from ``ps`` elsewhere.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too.
    """
    if (_PROC / "self" / "stat").exists():
        table = {}
        for entry in _PROC.iterdir():
            if entry.name.isdigit() and (row := _proc_row(int(entry.name))) is not None:
                table[int(entry.name)] = row
        return table
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat=,sess=,lstart=,args="],
                         capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 9:  # lstart is five words: "Sat Nov 28 05:13:52 2026"
            table[int(parts[0])] = _Row(int(parts[1]), parts[2], " ".join(parts[4:9]), int(parts[3]),
                                        " ".join(parts[9:]))
    return table


def _ticks_since_boot() -> int | None:
    """Now, in the unit of /proc's start times (clock ticks since boot); None off Linux."""
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None


def _row(pid: int) -> _Row | None:
    if (_PROC / "self" / "stat").exists():
        return _proc_row(pid)
    return process_table().get(pid)


@dataclass(frozen=True)
class ProcessId:
    """One process, told apart from any later process that gets the same pid by its start time.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too."""

    pid: int
    start_time: str

    @classmethod
    def of(cls, pid: int) -> "ProcessId | None":
        """The process that has ``pid`` now, or None if there is none."""
        row = _row(pid)
        return None if row is None else cls(pid, row.start_time)

    def is_alive(self) -> bool:
        """True while this very process runs (a zombie has exited; it only was not reaped yet)."""
        row = _row(self.pid)
        return row is not None and row.start_time == self.start_time and not row.state.startswith("Z")

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if, and only if, this very process still runs. True if it was sent."""
        if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
            try:
                fd = os.pidfd_open(self.pid)
            except OSError:  # gone
                return False
            try:  # the pidfd pins the process: if it is ours now, the signal reaches it
                if not self.is_alive():
                    return False
                signal.pidfd_send_signal(fd, sig)
                return True
            except OSError:
                return False
            finally:
                os.close(fd)
        if not self.is_alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except OSError:
            return False


def children_of(pid: int, table: dict | None = None) -> list[ProcessId]:
    """The processes whose parent is ``pid``.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too."""
    table = process_table() if table is None else table
    return [ProcessId(child, row.start_time) for child, row in table.items() if row.ppid == pid]


def descendants_of(pid: int, table: dict | None = None) -> list[ProcessId]:
    """Children, grandchildren, ... of ``pid``.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too."""
    table = process_table() if table is None else table
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop(), table):
            found.append(child)
            todo.append(child.pid)
    return found


def stop_processes(processes, grace: float = 5.0) -> list[ProcessId]:
    """SIGTERM each process that is still the one we know, wait up to ``grace`` seconds, then
    SIGKILL the ones still running. Returns those still alive afterwards.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too."""
    processes = list(processes)
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)
    for sig in (signal.SIGTERM, kill):
        for process in processes:
            process.signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.is_alive() for p in processes):
            time.sleep(0.1)
    return [process for process in processes if process.is_alive()]


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends (then they arrive): a cleanup cut short
    is what leaves processes behind. Only where it can be done (POSIX, the main thread).

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too."""
    held = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# Linux: a command is started through this short Python program, which asks the kernel to send it
# SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG, kept across exec), then becomes the
# command (same pid, same start time). So if the process that supervises it is killed outright (a
# notebook's kernel killed for lack of memory, say), where no stop_all can run, its children are
# still stopped; Flower's own helpers watch their parents' pids and follow. (Setting it between fork
# and exec with Popen's preexec_fn is not safe in a process with threads, such as a Jupyter kernel.)
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('its supervisor ended before it started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class Supervisor:
    """Starts commands and guarantees that they, and what they started, are stopped at the end.

    ``start(name, argv)`` runs ``argv`` in a new session with its output in ``log_dir/<name>.log``;
    on Linux a command is also sent SIGTERM if the thread that started it dies without stopping it.
    ``running()`` is every process known to be ours that still runs; ``stop_all()`` stops them.
    Use it as a context manager: ``stop_all`` then runs whatever happens inside the block.

    The machinery behind the deployment of notebook 08, §6; the browser tests use it too.
    """

    def __init__(self, log_dir, *, env: dict | None = None, cwd=None) -> None:
        self.log_dir, self.env, self.cwd = Path(log_dir), env, cwd
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}
        self.known: set[ProcessId] = set()  # every process proven ours, alive or not
        self._sessions: dict[int, ProcessId] = {}  # session id -> the process we started to open it
        self._session_seen: dict[int, int] = {}  # session id -> when (clock ticks) we last saw it ours
        self._logs = []

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        if name in self.started:
            raise ValueError(f"a process named {name!r} was already started: give each its own name")
        if sys.platform.startswith("linux"):
            path = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=(self.env or os.environ).get("PATH"))
            if path is not None and not os.path.isabs(path):
                path = os.path.abspath(os.path.join(self.cwd or os.getcwd(), path))  # as Popen(cwd=...) would
            if path is None or not os.access(path, os.X_OK):
                raise FileNotFoundError(f"cannot start {name!r}: no executable {argv[0]!r}")
            argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), path, *argv[1:]]
        log = open(self.log_path(name), "wb")  # noqa: SIM115 (closed in stop_all)
        self._logs.append(log)
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=self.env, cwd=self.cwd, start_new_session=True)
        self.started[name] = process
        # Not reaped yet, so the pid is certainly our child's; it may already have exited (None).
        if (ours := ProcessId.of(process.pid)) is not None:
            self.known.add(ours)
            self._sessions[process.pid] = ours
        return process

    def adopt(self, process: ProcessId) -> None:
        """Count ``process`` as ours (one we started some other way)."""
        self.known.add(process)

    def _learn(self) -> None:
        """Add every process below a live one we know, and every process in a session we opened
        that started before we last saw that session's first process (ours) alive."""
        table = process_table()
        now = _ticks_since_boot()
        for sid, leader in self._sessions.items():
            if now is not None and (row := table.get(sid)) is not None and row.start_time == leader.start_time:
                self._session_seen[sid] = now  # the session is certainly ours up to now
        alive = {p for p in self.known
                 if (row := table.get(p.pid)) is not None and row.start_time == p.start_time}
        grew = True
        while grew:
            ours = {p.pid for p in alive}
            new = {ProcessId(pid, row.start_time) for pid, row in table.items()
                   if row.ppid in ours or (row.sid in self._session_seen and row.start_time.isdigit()
                                           and int(row.start_time) <= self._session_seen[row.sid])}
            grew = not new <= alive
            alive |= new
        self.known |= alive

    def running(self) -> set[ProcessId]:
        """The processes we started, or they started, that still run."""
        for process in self.started.values():
            process.poll()  # reap our own children, so that they stop counting
        self._learn()
        return {process for process in self.known if process.is_alive()}

    def stop_all(self, grace: float = 10.0) -> set[ProcessId]:
        """SIGTERM everything that is ours, wait up to ``grace`` s, then SIGKILL what is left.
        Returns what still runs afterwards (empty unless something refused to die)."""
        left = self.running()
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            for process in left:
                process.signal(sig)
            deadline = time.monotonic() + grace
            while (left := self.running()) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not left:
                break
            grace = 5.0
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for log in self._logs:
            log.close()
        return self.running()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info) -> None:
        with signals_held():
            left = self.stop_all()
        if left:
            print(f"could not stop processes {sorted(p.pid for p in left)}", file=sys.stderr)


def available_memory_mb() -> float | None:
    """Memory this process may still use, in MB: the smaller of the machine's available memory and
    what its memory cgroup (a container's or Binder's limit) leaves; None if neither can be read.
    Taught in notebook 08, §2 (checked before Ray starts)."""
    candidates = []
    try:
        import psutil  # a dependency of Ray

        candidates.append(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # "0::/path" (cgroup v2) or "4:memory:/path" (v1)
        _, controllers, where = line.split(":", 2)
        if controllers == "":
            files = [Path("/sys/fs/cgroup") / where.lstrip("/") / name for name in ("memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            files = [Path("/sys/fs/cgroup/memory") / where.lstrip("/") / name
                     for name in ("memory.limit_in_bytes", "memory.usage_in_bytes")]
        else:
            continue
        try:
            limit, usage = (f.read_text().strip() for f in files)
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            candidates.append(int(limit) - int(usage))
    return min(candidates) / 2**20 if candidates else None
