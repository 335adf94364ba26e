"""The Flower app as a real deployment on this machine: a SuperLink, one SuperNode per organisation.

Taught in notebook 08, §6. Everything listens on 127.0.0.1 only::

    history = deployment.run_deployment(rounds=3)           # TLS + SuperNode authentication
    with deployment.LoopbackDeployment(workdir) as d:       # the steps, one by one
        d.start_superlink()
        for partition_id, name in enumerate(deployment.ORGANISATIONS):
            d.add_supernode(name, partition_id)
        history = d.run({"num-server-rounds": 3})

By default the connections are what a real deployment needs: TLS, with a certificate authority
made up for this run (valid for 127.0.0.1 and localhost only), and SuperNode authentication (each
SuperNode has its own key pair; the SuperLink accepts only SuperNodes whose public keys were
registered with ``flwr supernode register``). ``secure=False`` switches both off: loopback
debugging only.

What this does not add: the SuperLink's Control API (``flwr run``, ``flwr supernode register``)
has no authentication in Flower 1.42 unless account authentication is set up (``flwr login``,
Flower's enterprise feature). On a shared machine any local user who can reach its port can
submit a run or register a SuperNode. A real deployment puts it behind authentication and a
firewall, and runs each organisation's SuperNode on its own machine.

Every process is started and stopped by ``processes.Supervisor``, which never signals a
process it cannot prove it started. Everything Flower writes (``FLWR_HOME``, certificates, keys,
logs) stays in ``workdir``. The run's result is the course's one result type,
``federated.History``, as the ServerApp saved it (``flower_bridge.load_results``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import federated
from .flower_bridge import APP_DIR, load_results
from .processes import Supervisor, available_memory_mb

__all__ = ["LOOPBACK", "ORGANISATIONS", "DeploymentFailed", "make_loopback_certificates", "make_supernode_keys",
           "free_port", "flower_environment", "LoopbackDeployment", "run_deployment", "run_local_simulation"]

LOOPBACK = "127.0.0.1"
CONNECTION = "grokfl-loopback"
ORGANISATIONS = ("Bob", "Alice", "Sue")  # one SuperNode each; the order is their partition id
DEPLOYMENT_NEEDS_MB = 1600  # measured: the deployment alone peaked at 1.58 GB in a 2 GB cgroup (page cache included)


class DeploymentFailed(RuntimeError):
    """A step of the deployment failed; the message says which, and where its log is.

    Part of the deployment of notebook 08, §6."""


def make_loopback_certificates(directory) -> dict[str, Path]:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 / localhost.

    In a real deployment the SuperLink's certificate names its real host name and is signed by a
    CA the organisations trust. Returns the paths ``{"ca", "cert", "key"}``.

    Part of the deployment of notebook 08, §6.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = dt.datetime.now(dt.timezone.utc)
    valid_from, valid_until = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(valid_from)
                   .not_valid_after(valid_until))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grokfl loopback CA")])
    ca_cert = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                       encipher_only=False, decipher_only=False), True)])
    server_cert = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, server_key.public_key(), ca_key, [
            (x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
             False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def make_supernode_keys(directory, name: str) -> tuple[Path, Path]:
    """An EC key pair (NIST P-384, OpenSSH format) that identifies one SuperNode: (private, public).

    Part of the deployment of notebook 08, §6."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private_path, public_path = Path(directory) / f"{name}.key", Path(directory) / f"{name}.pub"
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                          serialization.PublicFormat.OpenSSH))
    return private_path, public_path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it).

    Part of the deployment of notebook 08, §6."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _flower_command(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise DeploymentFailed(f"`{name}` is not in {Path(sys.executable).parent}: use the course's virtualenv "
                               "(pip install -r requirements.txt installs Flower)")
    return path


def flower_environment(flwr_home) -> dict[str, str]:
    """The environment of every Flower process: its files in ``flwr_home`` (not ~/.flwr); no
    telemetry, no update check and no installing of the app's dependencies at run time (no network
    calls); and the virtualenv first on PATH (the SuperLink and SuperNodes start
    ``flower-superexec`` by name).

    Part of the deployment of notebook 08, §6."""
    return {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # install nothing at run time (no network)
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, (str, Path)) else repr(value)


class LoopbackDeployment:
    """A SuperLink and SuperNodes on 127.0.0.1, stopped (every process) when the ``with`` block ends.

    ``workdir`` receives FLWR_HOME, the secrets, the logs (``logs/<name>.log``) and the results.
    ``secure``: TLS and SuperNode authentication (default) or neither. ``timeout``: seconds for
    the whole deployment, after which the current step fails.

    Taught in notebook 08, §6, and its exercise 3.
    """

    def __init__(self, workdir, *, secure: bool = True, timeout: float = 600.0) -> None:
        self.workdir, self.secure = Path(workdir), secure
        self.flwr_home, self.secrets = self.workdir / "flwr_home", self.workdir / "secrets"
        self.secrets.mkdir(parents=True, exist_ok=True)
        self.env = flower_environment(self.flwr_home)
        self.supervisor = Supervisor(self.workdir / "logs", env=self.env, cwd=self.workdir)
        self.deadline = time.monotonic() + timeout
        self.port: int | None = None
        self.certificates: dict[str, Path] | None = None

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeploymentFailed("the deployment did not finish in time")
        return left

    def _wait_while(self, condition, what: str, log: str) -> None:
        while condition():
            self.supervisor.running()  # learn the helpers Flower starts while their parents live
            if time.monotonic() > self.deadline:
                raise DeploymentFailed(f"timed out waiting for {what}; see {self.supervisor.log_path(log)}")
            time.sleep(0.1)

    def start_superlink(self) -> None:
        """Start the SuperLink and wait until it listens; write the `flwr` CLI's connection to it."""
        self.port = free_port()
        argv = [_flower_command("flower-superlink"), "--host", LOOPBACK, "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.secure:
            self.certificates = make_loopback_certificates(self.secrets)
            argv += ["--ssl-ca-certfile", str(self.certificates["ca"]), "--ssl-certfile", str(self.certificates["cert"]),
                     "--ssl-keyfile", str(self.certificates["key"]), "--enable-supernode-auth"]
        else:
            argv.append("--insecure")
        link = self.supervisor.start("superlink", argv)

        def not_listening() -> bool:
            if link.poll() is not None:
                raise DeploymentFailed(f"the SuperLink exited ({link.returncode}); see "
                                       f"{self.supervisor.log_path('superlink')}")
            with socket.socket() as sock:
                return sock.connect_ex((LOOPBACK, self.port)) != 0

        self._wait_while(not_listening, "the SuperLink to listen", "superlink")
        connection = [f'[superlink]\ndefault = "{CONNECTION}"\n', f"[superlink.{CONNECTION}]",
                      f'address = "{LOOPBACK}:{self.port}"',
                      "insecure = true" if not self.secure else f'root-certificates = "{self.certificates["ca"].as_posix()}"']
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text("\n".join(connection) + "\n", encoding="utf-8")

    def _cli(self, *args: str) -> str:
        """Run a short `flwr` command against the SuperLink; raise if it fails."""
        done = subprocess.run([_flower_command("flwr"), *args], env=self.env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=self._remaining(), stdin=subprocess.DEVNULL)
        with self.supervisor.log_path("flwr-cli").open("a", encoding="utf-8") as log:
            log.write(f"$ flwr {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise DeploymentFailed(f"`flwr {args[0]} {args[1]}` failed ({done.returncode}); "
                                   f"see {self.supervisor.log_path('flwr-cli')}")
        return done.stdout

    def add_supernode(self, name: str, partition_id: int, *, register: bool = True):
        """Start the SuperNode of organisation ``name``, holding ``partition_id``. With TLS, it gets a
        key pair of its own, whose public key is registered with the SuperLink unless ``register=False``."""
        if self.port is None:
            raise DeploymentFailed("start the SuperLink first (start_superlink)")
        argv = [_flower_command("flower-supernode"), "--superlink", f"{LOOPBACK}:{self.port}",
                "--host", LOOPBACK, "--port", str(free_port()),  # this SuperNode's own API, for its ClientApp
                "--node-config", f'partition-id={int(partition_id)} organisation="{name}"']
        if self.secure:
            private_key, public_key = make_supernode_keys(self.secrets, name)
            if register:
                self._cli("supernode", "register", str(public_key), CONNECTION)
            argv += ["--root-certificates", str(self.certificates["ca"]), "--auth-supernode-private-key", str(private_key)]
        else:
            argv.append("--insecure")
        return self.supervisor.start(f"supernode-{name}", argv)

    def run(self, run_config: dict | None = None, app_dir=APP_DIR) -> federated.History:
        """Submit the app with `flwr run`, wait for it, and return the History its ServerApp saved."""
        results = self.workdir / "results"
        config = {**(run_config or {}), "results-dir": results.as_posix()}
        run = self.supervisor.start("flwr-run", [
            _flower_command("flwr"), "run", str(app_dir), CONNECTION, "--stream",
            "--run-config", " ".join(f"{key}={_toml_value(value)}" for key, value in config.items())])
        self._wait_while(lambda: run.poll() is None, "`flwr run`", "flwr-run")
        if run.returncode != 0 or not (results / "history.json").exists():
            raise DeploymentFailed(f"`flwr run` ended ({run.returncode}) without results; "
                                   f"see {self.supervisor.log_path('flwr-run')}")
        return load_results(results)

    def stop(self) -> set:
        """Stop every process this deployment started, or they started; return any left running."""
        return self.supervisor.stop_all()

    def __enter__(self) -> "LoopbackDeployment":
        return self

    def __exit__(self, *exc_info) -> None:
        self.supervisor.__exit__(*exc_info)   # stop everything, signals held, and say what is left


def run_deployment(rounds: int = 3, *, secure: bool = True, app_dir=APP_DIR, timeout: float = 600.0,
                   workdir=None, log=print) -> federated.History:
    """Start a SuperLink and Bob's, Alice's and Sue's SuperNodes on 127.0.0.1, run the app for
    ``rounds`` rounds with `flwr run`, stop every process, and return the run's ``History``.
    ``log`` receives one line per step. Everything goes to a temporary ``workdir`` unless given.

    Taught in notebook 08, §6."""
    available = available_memory_mb()
    if available is not None and available < DEPLOYMENT_NEEDS_MB:
        raise MemoryError(f"the deployment needs about {DEPLOYMENT_NEEDS_MB} MB of free memory (a SuperLink, three "
                          f"SuperNodes and their apps, each a Python process), {available:.0f} MB are available: close "
                          "other notebooks, or run `python scripts/run_flower_deployment.py` in a terminal")
    with (contextlib.nullcontext(workdir) if workdir is not None
          else tempfile.TemporaryDirectory(prefix="grokfl-flower-")) as directory:
        with LoopbackDeployment(directory, secure=secure, timeout=timeout) as deployment:
            deployment.start_superlink()
            log(f"SuperLink on {LOOPBACK}:<port> "
                + ("(TLS, SuperNode authentication on)" if secure else "(INSECURE: no TLS, no SuperNode authentication)"))
            for partition_id, name in enumerate(ORGANISATIONS):
                deployment.add_supernode(name, partition_id)
                log(f"SuperNode {name} started (partition {partition_id})")
            log(f"flwr run: {rounds} rounds")
            history = deployment.run({"num-server-rounds": rounds})
        left = deployment.supervisor.running()
        if left:
            raise DeploymentFailed(f"processes {sorted(p.pid for p in left)} did not stop")
        log("stopped every process the deployment started")
        return history


def run_local_simulation(workdir, num_supernodes: int, run_config: dict | None = None, *, app_dir=APP_DIR,
                         timeout: float = 600.0) -> federated.History:
    """The app on Flower's simulation engine the supported way: ``flwr run <app> local
    --federation-config "num-supernodes=N"``, which starts a local simulation SuperLink in the
    background. Its ports are chosen free, its files go to ``workdir``, and it is stopped at the end.

    Shown in notebook 08, §2 (`flwr run . local`); tests/test_flower.py runs it."""
    workdir = Path(workdir)
    results = workdir / "results"
    config = {**(run_config or {}), "results-dir": results.as_posix()}
    env = {**flower_environment(workdir / "flwr_home"), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    with Supervisor(workdir / "logs", env=env, cwd=workdir) as supervisor:
        run = supervisor.start("flwr-run", [
            _flower_command("flwr"), "run", str(app_dir), "local", "--stream",
            "--federation-config", f"num-supernodes={int(num_supernodes)}",
            "--run-config", " ".join(f"{key}={_toml_value(value)}" for key, value in config.items())])
        deadline = time.monotonic() + timeout
        while run.poll() is None:
            supervisor.running()  # learn the background SuperLink while `flwr run` is its parent
            if time.monotonic() > deadline:
                raise DeploymentFailed(f"`flwr run` did not finish in {timeout:.0f} s; see {supervisor.log_path('flwr-run')}")
            time.sleep(0.1)
        if run.returncode != 0 or not (results / "history.json").exists():
            raise DeploymentFailed(f"`flwr run` ended ({run.returncode}) without results; "
                                   f"see {supervisor.log_path('flwr-run')}")
    return load_results(results)
