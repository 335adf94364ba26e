"""The Flower app on Flower's simulation engine (Ray), inside this Python process. Taught in notebook 08, §2.

``simulate`` starts the engine once and runs on it one run after another, each a run config of
the app in ``flower_app/`` (``flwr run --run-config`` does the same for one run), or a ``Run`` of
another ServerApp, such as SecAgg+'s (``grokfl_flower.secagg_app``)::

    book, mailboxes = simulation.simulate(6, {"num-clients": 3}, {"partitioning": "mailbox", "num-clients": 6})

Starting Ray costs about ten seconds, each time; that is why one call runs many runs. Flower's
supported way to simulate, ``flwr run <app> local``, starts Ray once per run, in a background
SuperLink: ``deployment.run_local_simulation`` runs it, and the tests check that both agree.

Nothing here changes the environment when it is imported. Flower reports usage to its servers
unless ``FLWR_TELEMETRY_ENABLED`` was ``"0"`` when ``flwr`` was imported; ``simulate`` switches the
report off while it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from . import federated, processes
from .flower_bridge import APP_DIR, load_results, quiet_flower

__all__ = ["Run", "app_config", "load_app", "RAY_BACKEND", "simulate"]


class Run(NamedTuple):
    """A run of another ServerApp than the app's own: ``server_app`` is the app object, or its
    reference ``"module:attribute"`` as in ``[tool.flwr.app.components]``; ``config`` updates the
    app's default run config.

    Taught in notebook 08, §2."""

    server_app: object
    config: dict


def app_config(app_dir=APP_DIR) -> dict:
    """The app's default run config: ``[tool.flwr.app.config]`` of its ``pyproject.toml``.

    Taught in notebook 08, §1."""
    return dict(_pyproject(app_dir)["tool"]["flwr"]["app"]["config"])


def _pyproject(app_dir) -> dict:
    return tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))


def load_app(reference: str, app_dir=APP_DIR):
    """The app object ``reference`` names: ``"serverapp"`` or ``"clientapp"`` (the ones the app's
    ``pyproject.toml`` names), or ``"module:attribute"`` inside ``app_dir``.

    Used in notebook 08, §2 (simulate loads the apps by reference)."""
    components = _pyproject(app_dir)["tool"]["flwr"]["app"]["components"]
    module_name, _, attribute = components.get(reference, reference).partition(":")
    if not attribute:
        raise ValueError(f'expected "serverapp", "clientapp" or "module:attribute", got {reference!r}')
    if str(Path(app_dir).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(app_dir).resolve()))  # as `flwr run` does; Ray's workers inherit it
    return getattr(importlib.import_module(module_name), attribute)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (Ray's processes inherit them), then restore them."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _no_telemetry() -> Iterator[None]:
    """Flower reports usage to its servers unless FLWR_TELEMETRY_ENABLED was "0" when flwr was
    imported; switch the report off for the block, in this process and in the ones it starts."""
    from flwr.supercore import telemetry

    saved, telemetry.FLWR_TELEMETRY_ENABLED = telemetry.FLWR_TELEMETRY_ENABLED, "0"
    try:
        with _environment(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1"):
            yield
    finally:
        telemetry.FLWR_TELEMETRY_ENABLED = saved


def _ray_did_not_start(error: BaseException) -> bool:
    while error is not None:
        if "timed out during startup" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


RAY_BACKEND = {
    # One ClientApp at a time in one Ray worker, and a small object store (Ray's minimum is 75 MB;
    # a model is 1.3 MB): Ray's default reserves 30% of the machine's memory and starts a worker per
    # core. Notebook 08 measures what this costs: it fits in 2 GB.
    "init_args": {"num_cpus": 1, "object_store_memory": 80 * 2**20, "logging_level": "ERROR",
                  "log_to_driver": False, "include_dashboard": False},
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
}


def simulate(num_supernodes: int, *runs, client_app="clientapp", app_dir=APP_DIR,
             results_dir=None) -> list[federated.History]:
    """Run the runs one after another on ``num_supernodes`` virtual SuperNodes of Flower's simulation
    engine, started once. Taught in notebook 08, §2.

    A run is a dict, the app's ServerApp with the app's defaults (``app_config``) updated with its
    keys, as ``flwr run --run-config`` does (a key the app does not declare is refused, as there);
    or a ``Run(server_app, config)``. Virtual SuperNode ``i`` has ``partition-id = i`` and runs
    ``client_app`` (the app's own by default; an object or a reference as for ``load_app``).
    Returns each run's ``History``. With ``results_dir``, run ``i``'s results stay in
    ``results_dir/<i>`` (``flower_bridge.load_models`` reads them); without it they are deleted
    when the call returns or raises. The first run that raises stops the call, and its error
    propagates; the runs before it have saved their results. Flower's and Ray's logs are kept out
    of the output; errors still show.
    """
    runs = [run if isinstance(run, Run) else Run("serverapp", run) for run in runs]
    if not runs or not all(isinstance(run.config, dict) for run in runs):
        raise TypeError("give simulate at least one run: a dict of run-config values, or a Run(server_app, config)")
    defaults = app_config(app_dir)
    for run in runs:
        unknown = sorted(set(run.config) - set(defaults))
        if unknown:
            raise ValueError(f"run-config key(s) {unknown} are not in {Path(app_dir) / 'pyproject.toml'}'s "
                             f"[tool.flwr.app.config]: the keys are {sorted(defaults)}")
    server_apps = [load_app(run.server_app, app_dir) if isinstance(run.server_app, str) else run.server_app
                   for run in runs]
    client_app = load_app(client_app, app_dir) if isinstance(client_app, str) else client_app
    if not all(callable(app) for app in [*server_apps, client_app]):
        raise TypeError("a Run's server_app, and client_app, must be Flower apps or references to them "
                        '("module:attribute")')
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)  # a hint about ipywidgets Ray does not use
    from flwr.simulation import run_simulation

    with contextlib.ExitStack() as stack:
        if results_dir is None:
            results_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="grokfl-results-"))
        results_dirs = [Path(results_dir) / str(i) for i in range(len(runs))]
        configs = [{**defaults, **run.config, "results-dir": str(results_dirs[i])}
                   for i, run in enumerate(runs)]
        one_after_another = ServerApp()

        @one_after_another.main()
        def main(grid: Grid, context: Context) -> None:
            for server_app, config in zip(server_apps, configs):
                server_app(grid, Context(run_id=context.run_id, node_id=context.node_id, node_config={},
                                         state=RecordDict(), run_config=config))

        flwr_home = stack.enter_context(tempfile.TemporaryDirectory(prefix="grokfl-flwr-home-"))
        stack.enter_context(_no_telemetry())
        stack.enter_context(_environment(FLWR_HOME=os.environ.get("FLWR_HOME", flwr_home),
                                         RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0", RAY_DEDUP_LOGS="0"))
        stack.enter_context(quiet_flower())
        stack.enter_context(warnings.catch_warnings())  # Ray loads tqdm.auto, which warns in Jupyter without
        warnings.filterwarnings("ignore", message="IProgress not found")  # ipywidgets (Ray's bars only)
        for attempt in (1, 2, 3):
            children_before = set(processes.children_of(os.getpid()))
            try:
                run_simulation(server_app=one_after_another, client_app=client_app, num_supernodes=num_supernodes,
                               backend_config=json.loads(json.dumps(RAY_BACKEND)))
                break
            except Exception as error:
                # Whatever failed, stop exactly the processes this call started (the children it
                # did not have before) that are still running. On a busy machine Ray may not start
                # within its fixed 30 s ("The current node timed out during startup"): then try
                # again, three times in all.
                import ray

                ray.shutdown()
                started = [p for p in processes.children_of(os.getpid()) if p not in children_before]
                processes.stop_processes([q for p in started for q in processes.descendants_of(p.pid)] + started)
                if attempt == 3 or not _ray_did_not_start(error):
                    raise
        return [load_results(directory) for directory in results_dirs]
