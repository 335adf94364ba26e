"""The ServerApp the SuperLink runs: FedAvg of the clients' spam models, tested after every round.

Rounds, clients to wait for and training settings come from ``[tool.flwr.app.config]`` in this
app's pyproject.toml (or ``flwr run --run-config``); see
``grokfl_helpers.flower_bridge.make_server_app``. Its log lines "grokfl: round N: test accuracy"
show in ``flwr run --stream``.
"""

from grokfl_helpers.flower_bridge import make_server_app

# make_server_app returns (ServerApp, FlowerRun); in a deployment the results go to the run
# config's results-dir instead. (`app = ...` on one line: `flwr run` finds the app by reading this
# file, and it does not follow tuple unpacking.)
app = make_server_app()[0]
