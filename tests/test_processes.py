"""Tests of grokfl_helpers.processes: stop what we started, all of it, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from grokfl_helpers import processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_reused_pid_is_left_alone(tmp_path):
    """A process id we once knew now belongs to someone else (same pid, another start time):
    neither ProcessId.signal nor Supervisor.stop_all may touch it."""
    stranger = subprocess.Popen(SLEEPER)  # not started by the supervisor
    try:
        now = processes.ProcessId.of(stranger.pid)
        earlier = processes.ProcessId(stranger.pid, str(int(now.start_time) - 1))  # "our" process, long gone
        assert not earlier.is_alive() and not earlier.signal(15)
        supervisor = processes.Supervisor(tmp_path)
        supervisor.adopt(earlier)
        assert supervisor.running() == set()
        assert supervisor.stop_all(grace=1) == set()
        assert stranger.poll() is None and now.is_alive()
    finally:
        stranger.kill()
        stranger.wait()


def test_supervisor_stops_a_whole_process_tree(tmp_path):
    # A parent that starts a grandchild in a session of its own, as Flower's SuperLink does.
    with processes.Supervisor(tmp_path) as supervisor:
        parent = supervisor.start("tree", [sys.executable, "-c", (
            "import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
            "time.sleep(600)\n")])
        assert wait_until(lambda: len(supervisor.running()) == 2)
        tree = supervisor.running()
        assert parent.pid in {p.pid for p in tree}
        assert supervisor.stop_all(grace=5) == set()
    assert not any(p.is_alive() for p in tree)


def test_supervisor_stops_an_orphan_whose_parent_exited(tmp_path):
    """A SuperNode that exits early leaves its helper re-parented to PID 1: no longer below
    anything we started, but seen while its parent lived, so still known to be ours."""
    pid_file = tmp_path / "orphan.pid"
    supervisor = processes.Supervisor(tmp_path)
    parent = supervisor.start("exits-early", [sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(1)\n")])
    assert wait_until(pid_file.exists)
    orphan_pid = int(pid_file.read_text())
    assert wait_until(lambda: orphan_pid in {p.pid for p in supervisor.running()})  # learnt while the parent lives
    parent.wait(timeout=20)
    orphan = processes.ProcessId.of(orphan_pid)
    assert orphan.is_alive() and orphan in supervisor.running()  # alive, its parent gone
    assert supervisor.stop_all(grace=5) == set()
    assert not orphan.is_alive()


def test_a_stranger_in_no_session_of_ours_is_never_learnt(tmp_path):
    stranger = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        with processes.Supervisor(tmp_path) as supervisor:
            supervisor.start("ours", SLEEPER)
            assert wait_until(lambda: len(supervisor.running()) == 1)
            assert stranger.pid not in {p.pid for p in supervisor.running()}
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_what_a_killed_supervisor_started_is_stopped_too(tmp_path):
    """The process that supervises is killed outright (SIGKILL, as the out-of-memory killer does to a
    notebook's kernel): no stop_all runs, yet what it started gets SIGTERM and ends."""
    pid_file = tmp_path / "child.pid"
    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from grokfl_helpers import processes\n"
        f"supervisor = processes.Supervisor({str(tmp_path / 'logs')!r})\n"
        "child = supervisor.start('sleeper', [sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n")])
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
        child = processes.ProcessId.of(int(pid_file.read_text()))
        assert child is not None and child.is_alive()
        owner.kill()
        owner.wait()
        assert wait_until(lambda: not child.is_alive(), timeout=10)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_a_command_that_does_not_exist_is_refused_at_once(tmp_path):
    with processes.Supervisor(tmp_path) as supervisor:
        with pytest.raises(FileNotFoundError, match="no-such-command"):
            supervisor.start("missing", ["no-such-command-grokfl", "--help"])
        assert supervisor.running() == set()
