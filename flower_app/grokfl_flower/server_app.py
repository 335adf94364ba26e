"""The ServerApp: what the SuperLink runs for each `flwr run` (notebook 08, §2).

Everything it does is set by the run config: the defaults in ../pyproject.toml
([tool.flwr.app.config]), overridden by `flwr run . --run-config "num-server-rounds=5"`. It
runs a strategy (FedAvg, sampling as the course does; with dp-clipping-norm > 0, Flower's
DP-FedAvg around it), tests the global model after every round on the server's test set, and
writes the run's History and models to results-dir.
"""

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from grokfl_helpers import federated, training
from grokfl_helpers.flower_bridge import (STRATEGIES, KeepPaddingRowZero, arrays_to_model, client_names, corpus,
                                          model_to_arrays, save_results)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n, m = cfg["num-clients"], cfg["clients-per-round"] or cfg["num-clients"]
    clip, noise = cfg["dp-clipping-norm"], cfg["dp-noise-multiplier"]

    # The strategy: FedAvg (or the median) weighted by data size; with DP every client weighs the same.
    fedavg = STRATEGIES[cfg["aggregation"]](n, m, seed=cfg["seed"], weighted=clip == 0)
    strategy = fedavg
    if clip > 0:
        if cfg["dp-noise-seed"] >= 0:  # to repeat a run exactly; never in real use
            np.random.seed(cfg["dp-noise-seed"])  # Flower draws its noise with np.random.normal
        strategy = KeepPaddingRowZero(DifferentialPrivacyServerSideFixedClipping(
            fedavg, noise_multiplier=noise, clipping_norm=clip, num_sampled_clients=m))

    # What each client is told every round (client_app.py reads it from the message).
    train_config = ConfigRecord({
        "partitioning": cfg["partitioning"], "num-partitions": n, "seed": cfg["seed"],
        "local-epochs": cfg["local-epochs"], "batch-size": cfg["batch-size"],
        "learning-rate": cfg["learning-rate"],
    })

    # After every round the server tests the global model on its own test set.
    test_x, test_y = corpus().test_x, corpus().test_y
    names = client_names(cfg["partitioning"], n, cfg["seed"])
    history, models = federated.History(), {}

    def test(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = arrays_to_model(arrays)
        if cfg["keep-models"] or server_round == cfg["num-server-rounds"]:
            models[server_round] = model
        if server_round > 0:
            history.accuracy.append(training.accuracy(model, test_x, test_y))
            history.loss.append(training.mean_squared_error(model, test_x, test_y))
            history.clients.append([names[p] for p in fedavg.sampled[server_round]])
            history.bytes_sent.append(2 * m * federated.model_bytes(model))
        return MetricRecord({"accuracy": training.accuracy(model, test_x, test_y)})

    start = training.new_spam_model(len(corpus().vocab))  # the book's all-zero model
    strategy.start(grid=grid, initial_arrays=model_to_arrays(start), num_rounds=cfg["num-server-rounds"],
                   train_config=train_config, evaluate_fn=test)
    if len(history.accuracy) != cfg["num-server-rounds"]:
        raise RuntimeError(f"only {len(history.accuracy)} of {cfg['num-server-rounds']} rounds completed: "
                           "see the ClientApps' logs")
    if cfg["results-dir"]:
        save_results(cfg["results-dir"], history, models)
