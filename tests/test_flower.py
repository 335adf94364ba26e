"""Tests of the Flower app (flower_app/), grokfl_helpers.flower_bridge, .simulation and .deployment.

Fast tests call the pieces directly: a ClientApp is a callable, a strategy a class, a Grid can be
faked. Slow ones run Flower for real: the simulation engine (Ray) in this process, the supported
`flwr run . local` simulation, and one interrupted loopback deployment. Notebook 08 runs the
uninterrupted deployment and checks it against the simulation (its nbval test), so no test here
repeats that.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict

from grokfl_helpers import data, deployment, federated, flower_bridge, processes, simulation, training

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "run_flower_deployment.py"
TOLERANCE = 1e-12  # the same sums in a different order: float64 rounding only
BOOK = {"partitioning": "book", "num-partitions": 3, "seed": 0}


def client_app():
    return simulation.load_app("clientapp")


def message(content: RecordDict, message_type: str, node_id: int = 7) -> Message:
    """A message as the SuperLink would deliver it to a ClientApp."""
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=node_id,
                        reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                        message_type=message_type)
    return Message(content, metadata=metadata)


def context(partition_id: int | None) -> Context:
    node_config = {} if partition_id is None else {"partition-id": partition_id}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


# ---------------------------------------------------------------------------- model <-> arrays, partitions


def test_arrays_round_trip_copies_the_weights(corpus):
    model = training.new_spam_model(len(corpus.vocab))
    model.weight.data[5, 0] = 1.5
    arrays = flower_bridge.model_to_arrays(model)
    model.weight.data[5, 0] = -1.0  # the ArrayRecord holds a copy, not a view
    back = flower_bridge.arrays_to_model(arrays)
    assert back.weight.data.shape == (len(corpus.vocab), 1) and back.weight.data[5, 0] == 1.5


def test_arrays_to_model_rejects_other_shapes():
    with pytest.raises(ValueError, match="vocab_size, 1"):
        flower_bridge.arrays_to_model([np.zeros((10, 2))])
    with pytest.raises(ValueError, match="vocab_size, 1"):
        flower_bridge.arrays_to_model([np.zeros((10, 1)), np.zeros(3)])


def test_partitions_are_the_course_splits(corpus):
    assert flower_bridge.client_names("book", 3) == ["Bob", "Alice", "Sue"]
    for i, (X_ref, y_ref) in enumerate(federated.book_clients(corpus).values()):
        X, y = flower_bridge.partition(i, "book", 3)
        assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
    assert len(flower_bridge.client_names("mailbox", 6)) == len(data.MAILBOXES)
    X, _ = flower_bridge.partition(42, "iid", 100, seed=0)
    assert np.array_equal(X, federated.iid_clients(corpus, 100, seed=0)["client 42"][0])


def test_partitions_reject_a_wrong_count_name_or_id():
    with pytest.raises(ValueError, match="has 3 clients, not 4"):
        flower_bridge.partition(0, "book", 4)
    with pytest.raises(ValueError, match="partitioning must be one of"):
        flower_bridge.partition(0, "alphabetical", 3)
    with pytest.raises(ValueError, match="partition-id 3 is not in 0..2"):
        flower_bridge.partition(3, "book", 3)


# ---------------------------------------------------------------------------- the ClientApp of flower_app/


def test_client_app_trains_with_the_course_training(corpus):
    start = training.new_spam_model(len(corpus.vocab))
    config = ConfigRecord({**BOOK, "local-epochs": 2, "batch-size": 250, "learning-rate": 0.02})
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(start), "config": config})
    reply = client_app()(message(content, MessageType.TRAIN), context(partition_id=1))

    X, y = federated.book_clients(corpus)["Alice"]
    expected = training.train(copy.deepcopy(start), X, y, batch_size=250, epochs=2, alpha=0.02)
    assert federated.largest_difference(flower_bridge.arrays_to_model(reply.content["arrays"]), expected) == 0.0
    assert reply.content["metrics"]["num-examples"] == len(X)


def test_client_app_answers_its_partition_and_evaluates(corpus):
    answer = client_app()(message(RecordDict(), MessageType.QUERY), context(partition_id=2))
    assert answer.content["metrics"]["partition-id"] == 2
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:500], corpus.train_y[:500])
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(model), "config": ConfigRecord(BOOK)})
    result = client_app()(message(content, MessageType.EVALUATE), context(partition_id=0))
    X, y = federated.book_clients(corpus)["Bob"]
    assert result.content["metrics"]["accuracy"] == pytest.approx(training.accuracy(model, X, y))


def test_client_app_needs_its_partition_in_node_config(corpus):
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(training.new_spam_model(len(corpus.vocab))),
                          "config": ConfigRecord({**BOOK, "local-epochs": 1, "batch-size": 500, "learning-rate": 0.01})})
    with pytest.raises(ValueError, match="--node-config"):
        client_app()(message(content, MessageType.TRAIN), context(partition_id=None))


def test_the_flower_app_is_laid_out_as_flowers_examples():
    config = tomllib.loads((flower_bridge.APP_DIR / "pyproject.toml").read_text())
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "grokfl_flower.server_app:app",
                                 "clientapp": "grokfl_flower.client_app:app"}
    assert "federations" not in config["tool"]["flwr"]  # the SuperLink address lives in $FLWR_HOME
    assert config["project"]["requires-python"] == ">=3.11"
    for name in ("client_app.py", "server_app.py"):
        source = (flower_bridge.APP_DIR / "grokfl_flower" / name).read_text()
        assert len(source.splitlines()) <= 100, f"{name} should stay readable on its own"
        assert "\napp = " in source  # a module-level app, as `flwr run` expects
    assert len((flower_bridge.APP_DIR / "grokfl_flower" / "secagg_app.py").read_text().splitlines()) <= 150
    for name in ("server_app.py", "secagg_app.py"):
        source = (flower_bridge.APP_DIR / "grokfl_flower" / name).read_text()
        used = set(__import__("re").findall(r'cfg\["([a-z-]+)"\]', source))
        assert used and used <= set(app["config"]), f"{name}: run config keys without a default: {used - set(app['config'])}"


def test_the_secagg_client_app_hands_other_messages_to_the_main_app(corpus):
    secagg_client = simulation.load_app("grokfl_flower.secagg_app:client_app")
    answer = secagg_client(message(RecordDict(), MessageType.QUERY), context(partition_id=2))
    assert answer.content["metrics"]["partition-id"] == 2
    start = training.new_spam_model(len(corpus.vocab))
    config = ConfigRecord({**BOOK, "local-epochs": 1, "batch-size": 500, "learning-rate": 0.01})
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(start), "config": config})
    reply = secagg_client(message(content, MessageType.TRAIN), context(partition_id=0))
    plain = client_app()(message(content, MessageType.TRAIN), context(partition_id=0))
    assert federated.largest_difference(flower_bridge.arrays_to_model(reply.content["arrays"]),
                                        flower_bridge.arrays_to_model(plain.content["arrays"])) == 0.0


def test_simulate_refuses_what_is_not_a_run():
    with pytest.raises(TypeError, match="at least one run"):
        simulation.simulate(3)
    with pytest.raises(ValueError, match=r"\['num-server-round'\] are not in"):
        simulation.simulate(3, {"num-server-round": 1})                   # a typo, refused as `flwr run` does
    with pytest.raises(TypeError, match="must be Flower apps"):
        simulation.simulate(3, simulation.Run(None, {}))
    with pytest.raises(TypeError, match="Run\\(server_app, config\\)"):
        simulation.simulate(3, ["num-server-rounds", 1])
    with pytest.raises(ValueError, match="module:attribute"):
        simulation.load_app("no_such_app")


# ---------------------------------------------------------------------------- the strategy


class FakeGrid:
    """The two things SeededFedAvg asks of a Grid: the node ids, and the answers to its queries."""

    def __init__(self, num_nodes: int, claims: dict | None = None):
        self.partition_of = claims or {1000 + 37 * i: (i * 7) % num_nodes for i in range(num_nodes)}  # scrambled

    def get_node_ids(self):
        return list(self.partition_of)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for question in messages:
            node = question.metadata.dst_node_id
            metadata = Metadata(run_id=1, message_id="r", src_node_id=node, dst_node_id=0,
                                reply_to_message_id="q", group_id="", created_at=time.time(), ttl=60.0,
                                message_type=MessageType.QUERY)
            content = RecordDict({"metrics": MetricRecord({"partition-id": self.partition_of[node]})})
            replies.append(Message(content, metadata=metadata))
        return replies


@pytest.fixture
def server_identity():
    """Flower stamps the sender's identity on every message a ServerApp creates; set one for the test."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def test_seeded_fedavg_samples_the_clients_run_rounds_samples(corpus, server_identity):
    crowd = federated.iid_clients(corpus, 100, seed=0)
    start = training.new_spam_model(len(corpus.vocab))
    by_hand = federated.run_rounds(start, crowd, (corpus.test_x[:10], corpus.test_y[:10]), rounds=3,
                                   clients_per_round=10, seed=5)
    strategy, grid = flower_bridge.SeededFedAvg(100, 10, seed=5), FakeGrid(100)
    arrays = flower_bridge.model_to_arrays(start)
    for round_number, chosen in enumerate(by_hand.clients, start=1):
        messages = strategy.configure_train(round_number, arrays, ConfigRecord(), grid)
        partitions = [grid.partition_of[m.metadata.dst_node_id] for m in messages]
        assert partitions == [int(name.split()[1]) for name in chosen]
        assert messages[0].content["config"]["server-round"] == round_number


def test_seeded_fedavg_uses_only_the_first_partitions(server_identity):
    strategy, grid = flower_bridge.SeededFedAvg(3), FakeGrid(100)   # 100 nodes, a run of 3 clients
    messages = strategy.configure_train(1, flower_bridge.model_to_arrays(training.new_spam_model(5)), ConfigRecord(), grid)
    assert sorted(grid.partition_of[m.metadata.dst_node_id] for m in messages) == [0, 1, 2]


def test_two_supernodes_claiming_one_partition_are_refused(server_identity):
    """Mallory's node says it holds partition 0, Bob's: the run must not start (the last answer
    used to win, so an extra node could train in Bob's place)."""
    grid = FakeGrid(3, claims={11: 0, 12: 1, 13: 2, 66: 0})
    with pytest.raises(RuntimeError, match=r"claimed by more than one SuperNode \{0: \[11, 66\]\}"):
        flower_bridge.SeededFedAvg(3).configure_train(1, flower_bridge.model_to_arrays(training.new_spam_model(5)),
                                                      ConfigRecord(), grid)
    with pytest.raises(RuntimeError, match=r"no SuperNode holds partition\(s\) \[2\]"):
        flower_bridge.SeededFedAvg(3).learn_partitions(FakeGrid(3, claims={11: 0, 12: 1, 13: 7}))


def test_seeded_fedavg_refuses_a_round_with_a_missing_client(server_identity):
    strategy, grid = flower_bridge.SeededFedAvg(3), FakeGrid(3)
    strategy.configure_train(1, flower_bridge.model_to_arrays(training.new_spam_model(5)), ConfigRecord(), grid)
    with pytest.raises(RuntimeError, match="0 of 3 sampled clients"):
        strategy.aggregate_train(1, [])
    with pytest.raises(ValueError, match="clients_per_round"):
        flower_bridge.SeededFedAvg(3, clients_per_round=4)


def test_keep_padding_row_zero_is_training_keep_padding_zero():
    from flwr.serverapp.strategy import FedAvg

    class Noisy(FedAvg):
        def aggregate_train(self, server_round, replies):
            return flower_bridge.model_to_arrays(noisy), None

    noisy = training.new_spam_model(6)
    noisy.weight.data[:] = 0.5
    arrays, _ = flower_bridge.KeepPaddingRowZero(Noisy()).aggregate_train(1, [])
    expected = copy.deepcopy(noisy)
    training.keep_padding_zero(expected)
    assert np.array_equal(flower_bridge.arrays_to_model(arrays).weight.data, expected.weight.data)
    assert expected.weight.data[data.UNK, 0] == 0.0


def test_results_are_a_history_saved_and_loaded(tmp_path, corpus):
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:100], corpus.train_y[:100])
    history = federated.History(accuracy=[0.5, 0.9], loss=[0.3, 0.1], bytes_sent=[8, 8], clients=[["Bob"], ["Sue"]])
    flower_bridge.save_results(tmp_path, history, {0: training.new_spam_model(len(corpus.vocab)), 2: model})
    back = flower_bridge.load_results(tmp_path)
    assert isinstance(back, federated.History)
    assert (back.accuracy, back.loss, back.clients) == (history.accuracy, history.loss, history.clients)
    assert federated.largest_difference(back.model, model) == 0.0
    assert sorted(flower_bridge.load_models(tmp_path)) == [0, 2]


def test_secagg_error_bound_is_two_steps_per_client():
    step = 2 * 8.0 / 2**22
    assert flower_bridge.secagg_error_bound(3, 1.5) == pytest.approx(2 * 3 * step / 1.5)


def test_importing_the_package_sets_no_environment_variable():
    code = ("import os; before = dict(os.environ); "
            "from grokfl_helpers import flower_bridge, deployment, simulation; "
            "import grokfl_flower.client_app, grokfl_flower.server_app, grokfl_flower.secagg_app; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {**os.environ, "PYTHONPATH": str(flower_bridge.APP_DIR)}
    env.pop("FLWR_TELEMETRY_ENABLED", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- the deployment (fast parts)


def test_loopback_certificates_form_a_chain_for_127_0_0_1(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = deployment.make_loopback_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert paths["key"].stat().st_mode & 0o077 == 0  # the private key is readable by its owner only


def test_supernode_keys_are_openssh_p384(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = deployment.make_supernode_keys(tmp_path, "Bob")
    key = serialization.load_ssh_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert serialization.load_ssh_private_key(private.read_bytes(), None).public_key() == key


def test_script_rejects_bad_arguments(tmp_path):
    for argv in (["--rounds", "0"], ["--app-dir", str(tmp_path)]):
        result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "error:" in result.stderr


# ---------------------------------------------------------------------------- Flower for real


def _live_children() -> set:
    return {p for p in processes.children_of(os.getpid()) if p.is_alive()}


@pytest.fixture(scope="module")
def book_simulation():
    """Bob, Alice and Sue, 3 rounds of FedAvg, on Flower's simulation engine; and the children
    this process had before (another test's helpers, e.g. a process pool, are not Ray's)."""
    before = _live_children()
    history, = simulation.simulate(3, {"num-server-rounds": 3})
    return history, before


@pytest.mark.slow
def test_simulation_equals_the_hand_built_rounds(book_simulation, corpus):
    history, _ = book_simulation
    by_hand = federated.run_rounds(training.new_spam_model(len(corpus.vocab)), federated.book_clients(corpus),
                                   (corpus.test_x, corpus.test_y), rounds=3, weighted=True)
    assert federated.largest_difference(history.model, by_hand.model) <= TOLERANCE
    assert history.accuracy == by_hand.accuracy and history.clients == by_hand.clients


@pytest.mark.slow
def test_simulation_leaves_no_process_behind(book_simulation):
    _, before = book_simulation
    deadline = time.monotonic() + 30  # Ray's shutdown may still be reaping its workers
    while _live_children() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live_children() - before == set()


@pytest.mark.slow
def test_flwr_run_local_simulation_gives_the_same_history(book_simulation, tmp_path):
    """The way Flower 1.42 supports (`flwr run . local`), which notebook 08 shows but does not run."""
    history, _ = book_simulation
    supported = deployment.run_local_simulation(tmp_path, 3, {"num-server-rounds": 3})
    assert supported.accuracy == history.accuracy and supported.clients == history.clients
    assert federated.largest_difference(supported.model, history.model) <= TOLERANCE


@pytest.mark.slow
def test_interrupted_deployment_stops_every_process(tmp_path):
    """Ctrl-C while the run is on: exit status 130, and no process of the deployment left."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--rounds", "3", "--timeout", "300"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    ours = processes.Supervisor(tmp_path)   # to find the deployment's processes, and stop them if the test fails
    ours.adopt(processes.ProcessId.of(process.pid))
    lines = []
    try:
        for line in process.stdout:  # wait until the SuperLink and the SuperNodes are up
            lines.append(line)
            if line.startswith("flwr run"):
                break
        deadline = time.monotonic() + 60
        while len(ours.running()) < 6 and time.monotonic() < deadline:  # script, SuperLink, 3 SuperNodes, flwr run
            time.sleep(0.1)
        started = ours.running()
        assert len(started) >= 6, "".join(lines)
        process.send_signal(signal.SIGINT)
        lines.extend(process.stdout)
        assert process.wait(timeout=60) == 130, "".join(lines)
        assert any("every process was stopped" in line for line in lines)
        deadline = time.monotonic() + 10
        while any(p.is_alive() for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in started if p.is_alive()] == []
    finally:
        ours.stop_all(grace=5)
