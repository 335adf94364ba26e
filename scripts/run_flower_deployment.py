#!/usr/bin/env python3
"""Run the grokfl Flower app as a real deployment on this machine: one SuperLink, three SuperNodes.

A thin command line around ``grokfl_helpers.deployment`` (notebook 08, §6), which does the work:
TLS with a throwaway certificate authority, SuperNode authentication, everything on 127.0.0.1,
every process stopped at the end, also on failure, timeout, Ctrl-C, SIGTERM or SIGHUP.

Usage (from the repository root, with the course's virtualenv active; about half a minute)::

    python scripts/run_flower_deployment.py                  # 3 rounds, TLS + SuperNode auth
    python scripts/run_flower_deployment.py --rounds 5 --keep data/flower-run   # keep logs and results

Exit status: 0 when the run completed, 1 when a step failed (the end of every log is printed),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from grokfl_helpers import deployment


class Interrupted(Exception):
    """Raised when the script receives Ctrl-C, SIGTERM or SIGHUP, so that the cleanup runs."""


def _interrupted(signum, _frame):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # once is enough: a cleanup cut short would leave processes behind
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before everything is stopped")
    parser.add_argument("--insecure", action="store_true", help="no TLS, no SuperNode authentication: debugging only")
    parser.add_argument("--keep", type=Path, default=None, help="copy the logs and results to this folder at the end")
    parser.add_argument("--app-dir", type=Path, default=deployment.APP_DIR, help="the Flower app (default: flower_app/)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.app_dir / "pyproject.toml").is_file():
        parser.error(f"--app-dir {args.app_dir} has no pyproject.toml: not a Flower app")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    with tempfile.TemporaryDirectory(prefix="grokfl-flower-") as workdir:
        try:
            history = deployment.run_deployment(args.rounds, secure=not args.insecure, app_dir=args.app_dir,
                                                timeout=args.timeout, workdir=workdir,
                                                log=lambda line: print(line, flush=True))
            for round_number, accuracy in zip(history.rounds, history.accuracy):
                print(f"round {round_number}: test accuracy {accuracy:.1%}", flush=True)
            return 0
        except deployment.DeploymentFailed as err:
            print(f"deployment failed: {err}", file=sys.stderr)
            for log in sorted(Path(workdir, "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"----- last lines of {log.name} -----\n" + "\n".join(tail), file=sys.stderr)
            return 1
        except (KeyboardInterrupt, Interrupted) as err:
            print(f"interrupted ({err or 'SIGINT'}): every process was stopped", file=sys.stderr, flush=True)
            return 130
        finally:
            if args.keep is not None:
                shutil.copytree(workdir, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("secrets"))


if __name__ == "__main__":
    sys.exit(main())
