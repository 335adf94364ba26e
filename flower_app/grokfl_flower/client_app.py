"""The ClientApp: what every SuperNode runs, next to its organisation's emails (notebook 08, §2).

A message comes in with the global model (an ArrayRecord) and the round's settings (a
ConfigRecord); the reply carries the trained model and how many emails it was trained on. The
emails never travel. Which emails are this node's: its ``--node-config "partition-id=<i>"``
(Flower's simulation engine gives virtual SuperNode i partition-id i); how the training set is
cut into partitions, the server says in each message ("partitioning": book = Bob, Alice, Sue).
"""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from grokfl_helpers import training
from grokfl_helpers.flower_bridge import arrays_to_model, model_to_arrays, partition

app = ClientApp()


def my_emails(message: Message, context: Context):
    """This node's (X, y): its partition-id, cut the way the server's config says."""
    if "partition-id" not in context.node_config:
        raise ValueError('start this SuperNode with --node-config "partition-id=<0, 1, ...>"')
    config = message.content["config"]
    return partition(context.node_config["partition-id"], config["partitioning"],
                     config["num-partitions"], config["seed"])


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model on this node's emails; send it back."""
    X, y = my_emails(message, context)
    config = message.content["config"]
    model = arrays_to_model(message.content["arrays"])
    training.train(model, X, y, batch_size=config["batch-size"], epochs=config["local-epochs"],
                   alpha=config["learning-rate"])
    # FedAvg weighs each reply by the metric its weighted_by_key names.
    metrics = MetricRecord({"num-examples": len(X), "equal-weight": 1})
    return Message(RecordDict({"arrays": model_to_arrays(model), "metrics": metrics}), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The received model's accuracy on this node's emails."""
    X, y = my_emails(message, context)
    model = arrays_to_model(message.content["arrays"])
    metrics = MetricRecord({"accuracy": training.accuracy(model, X, y), "num-examples": len(X)})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


@app.query()
def which_partition(message: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (SeededFedAvg asks once, before round 1)."""
    if "partition-id" not in context.node_config:
        raise ValueError('start this SuperNode with --node-config "partition-id=<0, 1, ...>"')
    metrics = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)
