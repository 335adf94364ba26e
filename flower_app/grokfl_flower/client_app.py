"""The ClientApp every SuperNode runs: train the course's spam model on this organisation's emails.

Which emails: the SuperNode's ``--node-config "partition-id=<i> num-partitions=3"`` picks Bob (0),
Alice (1) or Sue (2) of ``federated.book_clients``. The training is ``training.train``, with the
epochs, batch size and learning rate the server sends each round (see
``grokfl_helpers.flower_bridge.make_client_app``).
"""

from grokfl_helpers.flower_bridge import make_client_app

app = make_client_app(partitioning="book")
