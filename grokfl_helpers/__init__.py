"""grokfl_helpers — the code the grokfl notebooks build, written once and imported by the rest.

Each module is taught in a notebook and used by the ones after it:

* ``tensor``, ``gradcheck`` — an autograd Tensor, layers, losses and SGD (notebook 01)
* ``data`` — the Enron-Spam emails, downloaded, checked, tokenized and cached (notebook 02)
* ``training`` — the chapter-15 spam model: train, predict, accuracy (notebook 02)
* ``federated`` — clients, FedAvg and rounds (notebook 03)
* ``attacks`` — the words a model update gives away (notebook 04); labels, whole emails, membership,
  an empirical lower bound on ε, dense-layer inversion (notebook 10)
* ``secure_aggregation`` — pairwise masks so the server learns only the sum (notebook 05)
* ``homomorphic`` — Paillier encryption, packed and fast (notebook 06)
* ``ckks`` — CKKS lattice encryption through TenSEAL, beside Paillier (notebook 06)
* ``privacy`` — clipping, Gaussian noise and the privacy accountant (notebook 07)
* ``flower_bridge`` — the same model on Flower: what ``flower_app/`` and notebook 08 share (notebook 08)
* ``simulation`` — the Flower app on Flower's simulation engine (Ray), many runs on one start (notebook 08)
* ``deployment`` — the Flower app as a real deployment on 127.0.0.1: SuperLink, SuperNodes, TLS (notebook 08)
* ``processes`` — start processes and stop exactly those, by pid and start time; the memory left to
  start them in (notebook 08; the browser tests)
* ``heterogeneity`` — client drift, Dirichlet splits, FedProx, SCAFFOLD, personalization and
  compressed updates (notebook 09)
* ``poisoning`` — Mallory's attacks: label flipping, a backdoor trigger word, model replacement (notebook 11)
* ``robust`` — robust aggregation: norm bounding, median, trimmed mean, Krum, Bulyan (notebook 11)
* ``language_model`` — next-word prediction with the book's LSTM; a canary and its exposure (notebook 12)
* ``scoreboard`` — every attack against every defense on one federation, as cells and a heatmap (notebook 13)
* ``plotting`` — the few plotting functions every figure goes through
* ``notebook_cells`` — runs a notebook's cells tagged ``build`` (solution 01 and the tests use it)

Import what you need: ``from grokfl_helpers import data, training, federated``.
"""

__version__ = "0.1.0"
