"""Tests of grokfl_helpers.flower_bridge, the Flower app and scripts/run_flower_deployment.py.

Fast tests call the bridge's pieces directly (a ClientApp is a callable, a strategy a class).
Slow ones run Flower for real: the simulation engine (Ray) in this process, and the deployment
script, which starts a SuperLink and three SuperNodes on 127.0.0.1 and must leave nothing behind.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# flower_bridge before flwr: it switches Flower's telemetry off before flwr reads the setting
from grokfl_helpers import data, federated, flower_bridge, training

from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "run_flower_deployment.py"
FLOWER_PROCESS_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec",
                        "flwr-serverapp", "flwr-clientapp", "flwr run")
TOLERANCE = 1e-12  # the same sums in a different order: float64 rounding only


def load_script():
    """scripts/run_flower_deployment.py as a module (it is a script, not part of the package)."""
    if "run_flower_deployment" not in sys.modules:
        spec = importlib.util.spec_from_file_location("run_flower_deployment", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass needs to find its own module
        spec.loader.exec_module(module)
    return sys.modules["run_flower_deployment"]


def message(content: RecordDict, message_type: str, node_id: int = 7) -> Message:
    """A message as the SuperLink would deliver it to a ClientApp."""
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=node_id,
                        reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                        message_type=message_type)
    return Message(content, metadata=metadata)


def context(partition_id: int, num_partitions: int = 3) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": partition_id, "num-partitions": num_partitions},
                   state=RecordDict(), run_config={})


def flower_processes() -> set[int]:
    """PIDs of running (not zombie) Flower processes on this machine."""
    script = load_script()
    return {pid for pid, (_, state, command) in script._process_table().items()
            if not state.startswith("Z") and any(name in command for name in FLOWER_PROCESS_NAMES)}


# ---------------------------------------------------------------------------- model <-> arrays


def test_arrays_round_trip_copies_the_weights(corpus):
    model = training.new_spam_model(len(corpus.vocab))
    model.weight.data[5, 0] = 1.5
    arrays = flower_bridge.model_to_arrays(model)
    model.weight.data[5, 0] = -1.0  # the ArrayRecord holds a copy, not a view
    back = flower_bridge.arrays_to_model(arrays)
    assert back.weight.data.shape == (len(corpus.vocab), 1)
    assert back.weight.data[5, 0] == 1.5


def test_arrays_to_model_rejects_other_shapes():
    with pytest.raises(ValueError, match="vocab_size, 1"):
        flower_bridge.arrays_to_model([np.zeros((10, 2))])
    with pytest.raises(ValueError, match="vocab_size, 1"):
        flower_bridge.arrays_to_model([np.zeros((10, 1)), np.zeros(3)])


# ---------------------------------------------------------------------------- partitions


def test_client_datasets_are_the_course_splits(corpus):
    book = flower_bridge.client_datasets("book", 3)
    assert [name for name, _, _ in book] == ["Bob", "Alice", "Sue"]
    for (name, X, y), (X_ref, y_ref) in zip(book, federated.book_clients(corpus).values()):
        assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
    assert len(flower_bridge.client_datasets("mailbox", 6)) == len(data.MAILBOXES)
    iid = flower_bridge.client_datasets("iid", 100, seed=0)
    assert np.array_equal(iid[42][1], federated.iid_clients(corpus, 100, seed=0)["client 42"][0])


def test_client_datasets_reject_a_wrong_count_or_name():
    with pytest.raises(ValueError, match="has 3 clients but num-partitions is 4"):
        flower_bridge.client_datasets("book", 4)
    with pytest.raises(ValueError, match="partitioning must be one of"):
        flower_bridge.client_datasets("alphabetical", 3)


# ---------------------------------------------------------------------------- the ClientApp


def test_client_app_trains_with_the_course_training(corpus):
    app = flower_bridge.make_client_app("book")
    start = training.new_spam_model(len(corpus.vocab))
    config = ConfigRecord({"local-epochs": 2, "batch-size": 250, "learning-rate": 0.02})
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(start), "config": config})
    reply = app(message(content, MessageType.TRAIN), context(partition_id=1))

    X, y = federated.book_clients(corpus)["Alice"]
    expected = training.train(copy.deepcopy(start), X, y, batch_size=250, epochs=2, alpha=0.02)
    assert federated.largest_difference(flower_bridge.arrays_to_model(reply.content["arrays"]), expected) == 0.0
    assert reply.content["metrics"]["num-examples"] == len(X)


def test_client_app_answers_its_partition_and_evaluates(corpus):
    app = flower_bridge.make_client_app("book")
    answer = app(message(RecordDict(), MessageType.QUERY), context(partition_id=2))
    assert answer.content["metrics"]["partition-id"] == 2
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:500], corpus.train_y[:500])
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(model)})
    result = app(message(content, MessageType.EVALUATE), context(partition_id=0))
    X, y = federated.book_clients(corpus)["Bob"]
    assert result.content["metrics"]["accuracy"] == pytest.approx(training.accuracy(model, X, y))


def test_client_app_needs_its_partition_in_node_config(corpus):
    app = flower_bridge.make_client_app("book")
    content = RecordDict({"arrays": flower_bridge.model_to_arrays(training.new_spam_model(len(corpus.vocab)))})
    bare = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="--node-config"):
        app(message(content, MessageType.TRAIN), bare)


# ---------------------------------------------------------------------------- the strategy


class FakeGrid:
    """The two things SeededFedAvg asks of a Grid: the node ids, and the answers to its queries."""

    def __init__(self, num_nodes: int):
        self.partition_of = {1000 + 37 * i: (i * 7) % num_nodes for i in range(num_nodes)}  # scrambled

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


def test_seeded_fedavg_refuses_a_round_with_a_missing_client(corpus, server_identity):
    strategy, grid = flower_bridge.SeededFedAvg(3), FakeGrid(3)
    strategy.configure_train(1, flower_bridge.model_to_arrays(training.new_spam_model(5)), ConfigRecord(), grid)
    with pytest.raises(RuntimeError, match="0 of 3 sampled clients"):
        strategy.aggregate_train(1, [])
    with pytest.raises(ValueError, match="clients_per_round"):
        flower_bridge.SeededFedAvg(3, clients_per_round=4)


def test_keep_padding_row_zero_zeroes_only_the_padding_row():
    from flwr.serverapp.strategy import FedAvg

    class Noisy(FedAvg):
        def aggregate_train(self, server_round, replies):
            return flower_bridge.model_to_arrays(noisy), None

    noisy = training.new_spam_model(6)
    noisy.weight.data[:] = 0.5
    arrays, _ = flower_bridge.KeepPaddingRowZero(Noisy()).aggregate_train(1, [])
    weights = flower_bridge.arrays_to_model(arrays).weight.data
    assert weights[data.UNK, 0] == 0.0 and np.all(np.delete(weights, data.UNK, axis=0) == 0.5)


def test_flower_run_save_and_load(tmp_path, corpus):
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:100], corpus.train_y[:100])
    run = flower_bridge.FlowerRun(test_accuracy={0: 0.5, 1: 0.9}, models={1: model}, clients={1: [0, 2]})
    run.save(tmp_path)
    back = flower_bridge.FlowerRun.load(tmp_path)
    assert back.test_accuracy == run.test_accuracy and back.clients == run.clients
    assert back.accuracy == [0.9] and federated.largest_difference(back.model, model) == 0.0


def test_secagg_error_bound_is_two_steps_per_client():
    step = 2 * 8.0 / 2**22
    assert flower_bridge.secagg_error_bound(3, 1.5) == pytest.approx(2 * 3 * step / 1.5)


# ---------------------------------------------------------------------------- the deployment script (fast parts)


def test_loopback_certificates_form_a_chain_for_127_0_0_1(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = load_script().make_loopback_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert paths["key"].stat().st_mode & 0o077 == 0  # the private key is readable by its owner only


def test_supernode_keys_are_openssh_p384(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = load_script().make_supernode_keys(tmp_path, "Bob")
    key = serialization.load_ssh_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert serialization.load_ssh_private_key(private.read_bytes(), None).public_key() == key


def test_supervisor_stops_a_whole_process_tree(tmp_path):
    script = load_script()
    supervisor = script.Supervisor(log_dir=tmp_path, env=dict(os.environ), cwd=tmp_path)
    # A parent that starts a grandchild in a session of its own, as Flower's SuperLink does.
    parent = supervisor.start("tree", [sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "time.sleep(600)\n")])
    deadline = time.monotonic() + 20
    while len(supervisor.running_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = supervisor.running_pids()
    assert parent.pid in tree and len(tree) == 2
    assert supervisor.stop_all(grace_seconds=5) == set()
    table = script._process_table()
    assert not any(script._is_running(pid, table) for pid in tree)


def test_supervisor_stops_an_orphan_whose_parent_exited(tmp_path):
    """A SuperNode that exits early leaves its flower-superexec re-parented to PID 1: no longer in
    the tree below anything we started, but still in the process group we opened for it."""
    script = load_script()
    supervisor = script.Supervisor(log_dir=tmp_path, env=dict(os.environ), cwd=tmp_path)
    orphan_pid_file = tmp_path / "orphan.pid"
    parent = supervisor.start("exits-early", [sys.executable, "-c", (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(orphan_pid_file)!r}, 'w').write(str(child.pid))\n")])
    parent.wait(timeout=20)
    deadline = time.monotonic() + 20
    while not orphan_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan = int(orphan_pid_file.read_text())
    assert script._is_running(orphan, script._process_table())  # alive, and its parent is gone
    assert orphan in supervisor.running_pids()
    assert supervisor.stop_all(grace_seconds=5) == set()
    assert not script._is_running(orphan, script._process_table())


def test_script_rejects_bad_arguments(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--rounds", "0"])
    with pytest.raises(SystemExit):
        script.parse_args(["--app-dir", str(tmp_path)])


def test_the_flower_app_declares_its_components():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((REPO / "flower_app" / "pyproject.toml").read_text())
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "grokfl_flower.server_app:app",
                                 "clientapp": "grokfl_flower.client_app:app"}
    assert app["config"]["num-server-rounds"] == 3 and app["config"]["num-clients"] == 3
    assert "federations" not in config["tool"]["flwr"]  # the SuperLink address lives in $FLWR_HOME


# ---------------------------------------------------------------------------- Flower for real


@pytest.fixture(scope="module")
def book_simulation():
    """Bob, Alice and Sue, 3 rounds of FedAvg, on Flower's simulation engine."""
    server_app, run = flower_bridge.make_server_app(rounds=3)
    flower_bridge.simulate(server_app, flower_bridge.make_client_app("book"), num_clients=3)
    return run


def test_simulation_equals_the_hand_built_rounds(book_simulation, corpus):
    by_hand = federated.run_rounds(training.new_spam_model(len(corpus.vocab)), federated.book_clients(corpus),
                                   (corpus.test_x, corpus.test_y), rounds=3, weighted=True)
    assert federated.largest_difference(book_simulation.model, by_hand.model) <= TOLERANCE
    assert book_simulation.accuracy == by_hand.accuracy
    assert book_simulation.clients == {1: [0, 1, 2], 2: [0, 1, 2], 3: [0, 1, 2]}


def test_simulation_leaves_no_ray_process_behind(book_simulation):
    def children() -> list[str]:
        table = load_script()._process_table()
        return [command for pid, (ppid, state, command) in table.items()
                if ppid == os.getpid() and not state.startswith("Z")]

    deadline = time.monotonic() + 30  # Ray's shutdown may still be reaping its workers
    while children() and time.monotonic() < deadline:
        time.sleep(1)
    assert children() == []


def test_deployment_agrees_with_the_simulation(book_simulation, tmp_path):
    before = flower_processes()
    result = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "3", "--results-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLS, SuperNode authentication on" in result.stdout
    for round_number in (1, 2, 3):
        accuracy = book_simulation.test_accuracy[round_number]
        assert f"round {round_number}: test accuracy {accuracy:.1%}" in result.stdout
    deployed = flower_bridge.FlowerRun.load(tmp_path)
    assert deployed.test_accuracy == book_simulation.test_accuracy
    assert federated.largest_difference(deployed.model, book_simulation.model) <= TOLERANCE
    assert "stopped all" in result.stdout
    assert flower_processes() - before == set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_deployment_stops_every_process(sig, tmp_path):
    before = flower_processes()
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--rounds", "3", "--timeout", "300"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines = []
    try:
        for line in process.stdout:  # wait until the SuperLink and the SuperNodes are up
            lines.append(line)
            if line.startswith("flwr run"):
                break
        time.sleep(3)
        assert flower_processes() - before, "the deployment started no Flower process"
        process.send_signal(sig)
        lines.extend(process.stdout)
        assert process.wait(timeout=60) == 130, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
    assert any("stopping every process" in line for line in lines)
    assert flower_processes() - before == set()
