"""grokfl's spam model as a Flower app: the ServerApp and ClientApp that `flwr run` starts."""
