"""grokfl_helpers — the code the grokfl notebooks build, written once and imported by the rest.

Each module is taught in a notebook and used by the ones after it:

* ``tensor``, ``gradcheck`` — an autograd Tensor, layers, losses and SGD (notebook 01)
* ``data`` — the Enron-Spam emails, downloaded, checked, tokenized and cached (notebook 02)
* ``training`` — the chapter-15 spam model: train, predict, accuracy (notebook 02)
* ``federated`` — clients, FedAvg and rounds (notebook 03)
* ``attacks`` — the words a model update gives away (notebook 04)
* ``secure_aggregation`` — pairwise masks so the server learns only the sum (notebook 05)
* ``homomorphic`` — Paillier encryption, packed and fast (notebook 06)
* ``privacy`` — clipping, Gaussian noise and the privacy accountant (notebook 07)
* ``flower_bridge`` — the same model on Flower (notebook 08)
* ``plotting`` — the few plotting functions every figure goes through

Import what you need: ``from grokfl_helpers import data, training, federated``.
"""

__version__ = "0.1.0"
