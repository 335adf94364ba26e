#!/usr/bin/env python3
"""Run the grokfl Flower app as a real deployment on this machine: one SuperLink, three SuperNodes.

Notebook 08 runs the course's spam model on Flower's *simulation* engine, where every client
is a Python object inside one program. This script runs the very same app the way it runs
across organisations: a SuperLink (the server's long-running process), one SuperNode per
organisation (Bob, Alice and Sue, each with its own mail as its partition, given by
``--node-config``), and ``flwr run`` submitting the app to the SuperLink. Everything listens on
127.0.0.1 only.

By default the connections are what a real deployment needs: TLS with a certificate
authority made up for this run (self-signed, valid for 127.0.0.1 and localhost only), and
SuperNode authentication (each SuperNode has its own key pair; the SuperLink only accepts
SuperNodes whose public keys were registered with ``flwr supernode register``). ``--insecure``
switches both off; it exists for debugging on one machine and must never be used anywhere else.

The script owns the processes it starts: each runs in its own process group, and all of them
(and the helper processes Flower spawns below them) are stopped by PID when the run ends,
fails, times out, or the script receives Ctrl-C / SIGTERM / SIGHUP. Everything Flower writes
(``FLWR_HOME``, certificates, keys, logs) goes into one temporary directory that is deleted at
the end, unless ``--results-dir`` asks to keep the run's results (history.json and
global_model.npz, which ``flower_bridge.FlowerRun.load`` reads) or ``--keep-logs`` the logs.

Usage (from the repository root, with the course's virtualenv active; about a minute)::

    python scripts/run_flower_deployment.py              # 3 rounds, TLS + SuperNode auth
    python scripts/run_flower_deployment.py --rounds 5 --results-dir data/flower-deployment
    python scripts/run_flower_deployment.py --keep-logs data/flower-logs   # read what each did

Exit status: 0 when the run completed, 1 when a step failed (the end of every log is printed),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_APP_DIR = REPO_ROOT / "flower_app"
LOOPBACK = "127.0.0.1"
CONNECTION_NAME = "grokfl-loopback"
# One SuperNode per organisation; the order is the partition id the app gives each of them.
ORGANISATIONS = ("Bob", "Alice", "Sue")


class Interrupted(Exception):
    """Raised inside the script when it receives Ctrl-C, SIGTERM or SIGHUP, so `finally` blocks run."""


class DeploymentFailed(RuntimeError):
    """A step of the deployment failed; the message says which and where its log is."""


# --------------------------------------------------------------------------------------------
# Processes: start each in its own group, remember every PID, stop them all.
# --------------------------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str, str]]:
    """Map pid -> (parent pid, state letter, command line) for every process on the machine.

    Read from /proc on Linux (slim container images often have no `ps`), from `ps` elsewhere.
    """
    table = {}
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(errors="replace")
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended while we looked
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
            table[int(entry.name)] = (int(fields[1]), fields[0], command.strip())
        return table
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3:
            table[int(parts[0])] = (int(parts[1]), parts[2], parts[3] if len(parts) == 4 else "")
    return table


def _is_running(pid: int, table: dict[int, tuple[int, str, str]]) -> bool:
    """True if `pid` exists and is not a zombie (an exited process nobody has reaped yet)."""
    return pid in table and not table[pid][1].startswith("Z")


@dataclass
class Supervisor:
    """Starts the deployment's processes and guarantees they are all stopped at the end.

    Flower's SuperLink and SuperNodes start helpers of their own (``flower-superexec``, which
    starts ``flwr-serverapp`` / ``flwr-clientapp``), some in a new session, so killing our
    children's process groups is not enough: `stop_all` also walks the process tree below
    every PID we started and stops those PIDs too. And the other way round: a helper whose
    parent has exited is re-parented to PID 1, so the tree no longer leads to it, but it is still
    in the process group (and session) we opened for its parent — that is how we find it then.
    """

    log_dir: Path
    env: dict[str, str]
    cwd: Path
    started: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen_pids: set[int] = field(default_factory=set)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_file = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        # A signal arriving between Popen and the bookkeeping would orphan the process: defer it.
        with signals_deferred():
            process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: one signal reaches all of it
            )
            process.log_file = log_file  # type: ignore[attr-defined]
            self.started[name] = process
            self.seen_pids.add(process.pid)
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _descendants(self, table: dict[int, tuple[int, str, str]]) -> set[int]:
        """Every PID below a PID we know about (children, grandchildren, ...), and every process
        in a process group or session we opened (orphans whose parent already exited)."""
        ours = {process.pid for process in self.started.values()}  # each leads its group and session
        known = set(self.seen_pids)
        for pid in table:
            try:
                if os.getpgid(pid) in ours or os.getsid(pid) in ours:
                    known.add(pid)
            except (ProcessLookupError, PermissionError):  # ended while we looked, or not ours
                pass
        grew = True
        while grew:
            children = {pid for pid, (ppid, _, _) in table.items() if ppid in known}
            grew = not children <= known
            known |= children
        return known

    def _table(self) -> dict[int, tuple[int, str, str]]:
        """The process table, or, if it cannot be read, just our own children (still alive or not)."""
        try:
            return _process_table()
        except (OSError, subprocess.CalledProcessError):
            return {p.pid: (os.getpid(), "R" if p.poll() is None else "Z", "") for p in self.started.values()}

    def _signal_all(self, sig: int) -> None:
        table = self._table()
        self.seen_pids |= self._descendants(table)
        for process in self.started.values():
            try:  # even if the leader has exited: what it started may still be in its group
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in self.seen_pids:
            if _is_running(pid, table):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def running_pids(self) -> set[int]:
        table = self._table()
        self.seen_pids |= self._descendants(table)
        return {pid for pid in self.seen_pids if _is_running(pid, table)}

    def stop_all(self, grace_seconds: float = 10.0) -> set[int]:
        """SIGTERM everything we started or saw below it, then SIGKILL what is left.

        Returns the PIDs still running afterwards (empty unless something refused to die).
        """
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            for process in self.started.values():
                process.poll()  # reap our direct children
            if not self.running_pids():
                break
            time.sleep(0.2)
        if self.running_pids():
            self._signal_all(signal.SIGKILL)
            time.sleep(0.5)
        for process in self.started.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            process.log_file.close()  # type: ignore[attr-defined]
        return self.running_pids()


# --------------------------------------------------------------------------------------------
# TLS certificates and SuperNode keys, made with `cryptography` (already a Flower dependency).
# --------------------------------------------------------------------------------------------


def make_loopback_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 / localhost.

    In a real deployment the SuperLink's certificate comes from a CA the organisations trust
    and names the SuperLink's real host name; here both are generated for this run only and
    deleted with the temporary directory.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    valid_from, valid_until = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grokfl loopback CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca": directory / "ca.crt",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


def make_supernode_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC key pair (NIST P-384, OpenSSH format) that identifies one SuperNode."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private_path, public_path


# --------------------------------------------------------------------------------------------
# The deployment
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeploymentFailed(f"process exited with code {process.returncode}; see {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise DeploymentFailed(f"nothing listened on {LOOPBACK}:{port} after {timeout:.0f} s; see {log}")


def deployment_environment(flwr_home: Path) -> dict[str, str]:
    """The environment every Flower process of this run gets.

    FLWR_HOME keeps Flower's configuration, installed app bundles and caches in the temporary
    directory instead of ~/.flwr; telemetry and the update check are off (no network calls);
    the virtualenv's bin/ goes first on PATH because SuperLink and SuperNodes start
    `flower-superexec` by name.
    """
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def write_connection(flwr_home: Path, port: int, ca_path: Path | None) -> None:
    """Tell the `flwr` CLI where the SuperLink is: `$FLWR_HOME/config.toml`, not pyproject.toml."""
    lines = [
        "[superlink]",
        f'default = "{CONNECTION_NAME}"',
        "",
        f"[superlink.{CONNECTION_NAME}]",
        f'address = "{LOOPBACK}:{port}"',
    ]
    if ca_path is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{ca_path.as_posix()}"')
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def flower_command(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise DeploymentFailed(
            f"`{name}` is not in {Path(sys.executable).parent}: run this script with the "
            "course's virtualenv (pip install -r requirements.txt installs Flower)"
        )
    return path


def run_cli(argv: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> str:
    """Run a short `flwr` CLI command; its output goes to `log`; raise if it fails."""
    completed = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}\n{completed.stdout}{completed.stderr}\n")
    if completed.returncode != 0:
        raise DeploymentFailed(f"`{' '.join(argv[:3])}` failed (exit {completed.returncode}); see {log}")
    return completed.stdout


def run_deployment(args: argparse.Namespace, workdir: Path, supervisor: Supervisor) -> dict:
    """Start SuperLink and SuperNodes, submit the app with `flwr run`, return its results."""
    env = supervisor.env
    flwr_home = Path(env["FLWR_HOME"])
    secrets = workdir / "secrets"
    secrets.mkdir()
    results_dir = workdir / "results"
    results_dir.mkdir()
    deadline = time.monotonic() + args.timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeploymentFailed(f"the deployment did not finish within {args.timeout:.0f} s")
        return left

    link_port = free_port()
    link_argv = [
        flower_command("flower-superlink"),
        "--host", LOOPBACK,
        "--port", str(link_port),
        "--disable-runtime-dependency-installation",
    ]
    certificates = None
    if args.insecure:
        link_argv.append("--insecure")
    else:
        certificates = make_loopback_certificates(secrets)
        link_argv += [
            "--ssl-ca-certfile", str(certificates["ca"]),
            "--ssl-certfile", str(certificates["cert"]),
            "--ssl-keyfile", str(certificates["key"]),
            "--enable-supernode-auth",
        ]
    print(f"SuperLink on {LOOPBACK}:{link_port} "
          + ("(INSECURE: no TLS, no SuperNode authentication)" if args.insecure
             else "(TLS, SuperNode authentication on)"), flush=True)
    link = supervisor.start("superlink", link_argv)
    wait_for_port(link_port, link, supervisor.log_path("superlink"), min(60.0, remaining()))
    write_connection(flwr_home, link_port, None if certificates is None else certificates["ca"])

    flwr = flower_command("flwr")
    cli_log = supervisor.log_path("flwr-cli")
    for partition_id, name in enumerate(ORGANISATIONS):
        node_argv = [
            flower_command("flower-supernode"),
            "--superlink", f"{LOOPBACK}:{link_port}",
            "--host", LOOPBACK,
            "--port", str(free_port()),  # this SuperNode's own API for its ClientApp process
            "--node-config", f'partition-id={partition_id} num-partitions={len(ORGANISATIONS)} '
                             f'organisation="{name}"',
        ]
        if certificates is None:
            node_argv.append("--insecure")
        else:
            private_key, public_key = make_supernode_keys(secrets, name)
            run_cli([flwr, "supernode", "register", str(public_key), CONNECTION_NAME],
                    env, supervisor.cwd, cli_log, remaining())
            node_argv += [
                "--root-certificates", str(certificates["ca"]),
                "--auth-supernode-private-key", str(private_key),
            ]
        supervisor.start(f"supernode-{name}", node_argv)
        print(f"SuperNode {name} started (partition {partition_id})", flush=True)

    run_config = f'num-server-rounds={args.rounds} results-dir="{results_dir.as_posix()}"'
    run_argv = [flwr, "run", str(args.app_dir), CONNECTION_NAME, "--stream",
                "--run-config", run_config]
    print(f"flwr run: {args.rounds} rounds", flush=True)
    run = supervisor.start("flwr-run", run_argv)
    results_file = results_dir / "history.json"
    while run.poll() is None:
        for name, process in supervisor.started.items():
            if process.poll() is not None and name != "flwr-run":
                raise DeploymentFailed(f"{name} exited early; see {supervisor.log_path(name)}")
        remaining()
        time.sleep(0.5)
    if run.returncode != 0 or not results_file.exists():
        raise DeploymentFailed(
            f"`flwr run` ended (exit {run.returncode}) without results; "
            f"see {supervisor.log_path('flwr-run')}"
        )
    return json.loads(results_file.read_text(encoding="utf-8"))


def print_log_tails(log_dir: Path, lines: int = 15) -> None:
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        print(f"----- last lines of {log.name} -----", file=sys.stderr)
        print("\n".join(text), file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before everything is stopped (default 600)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="keep the run's history.json and global_model.npz here "
                             "(put it under the repository's git-ignored data/)")
    parser.add_argument("--app-dir", type=Path, default=DEFAULT_APP_DIR,
                        help="the Flower app to run (default: the repository's flower_app/)")
    parser.add_argument("--insecure", action="store_true",
                        help="no TLS and no SuperNode authentication: loopback debugging only")
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy the processes' logs to this directory at the end")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.app_dir / "pyproject.toml").is_file():
        parser.error(f"--app-dir {args.app_dir} has no pyproject.toml: not a Flower app")
    return args


_deferring = False
_deferred_signals: list[int] = []


def _raise_interrupted(signum: int, _frame: object) -> None:
    if _deferring:
        _deferred_signals.append(signum)
        return
    raise Interrupted(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C / SIGTERM / SIGHUP until the block is done, then raise `Interrupted`."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        if _deferred_signals:
            signum = _deferred_signals[0]
            _deferred_signals.clear()
            raise Interrupted(f"received {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous_handlers = {
        sig: signal.signal(sig, _raise_interrupted)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    started_at = time.monotonic()
    exit_code = 1
    with tempfile.TemporaryDirectory(prefix="grokfl-flower-") as tmp:
        workdir = Path(tmp)
        (workdir / "logs").mkdir()
        supervisor = Supervisor(
            log_dir=workdir / "logs",
            env=deployment_environment(workdir / "flwr_home"),
            cwd=workdir,
        )
        try:
            history = run_deployment(args, workdir, supervisor)
            for round_number, accuracy in sorted(
                (int(r), a) for r, a in history["test_accuracy"].items() if int(r) > 0
            ):
                print(f"round {round_number}: test accuracy {accuracy:.1%}", flush=True)
            if args.results_dir is not None:
                args.results_dir.mkdir(parents=True, exist_ok=True)
                for result in (workdir / "results").iterdir():
                    shutil.copy2(result, args.results_dir / result.name)
            exit_code = 0
        except (DeploymentFailed, subprocess.TimeoutExpired) as err:
            print(f"deployment failed: {err}", file=sys.stderr, flush=True)
            print_log_tails(workdir / "logs")
        except (KeyboardInterrupt, Interrupted) as err:
            print(f"interrupted ({err or 'received SIGINT'}): stopping every process", file=sys.stderr,
                  flush=True)
            exit_code = 130
        finally:
            # Ignore further Ctrl-C / SIGTERM while we stop the processes: a half-done cleanup
            # is what would leave processes behind.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            left = supervisor.stop_all()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in (workdir / "logs").glob("*.log"):
                    shutil.copy2(log, args.keep_logs / log.name)
            if left:
                print(f"could not stop processes {sorted(left)}", file=sys.stderr)
                exit_code = exit_code or 1
            else:
                print(f"stopped all {len(supervisor.seen_pids)} processes the run started",
                      flush=True)
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    print(f"deployment wall time: {time.monotonic() - started_at:.0f} s", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
