"""Every public function and class of grokfl_helpers says where it is taught, as d2l's ``#@save``
functions do: "Taught in notebook 03, §2.", or where it is used when it is machinery rather than a
lesson. The notebooks it names must exist."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import grokfl_helpers

REPO = Path(__file__).resolve().parent.parent
WHERE = re.compile(r"\b(notebook|solution)s? (\d\d)\b", re.IGNORECASE)


def public_objects():
    for info in pkgutil.iter_modules(grokfl_helpers.__path__):
        try:
            module = importlib.import_module(f"grokfl_helpers.{info.name}")
        except ImportError as error:  # an optional dependency missing here
            pytest.skip(f"grokfl_helpers.{info.name} cannot be imported: {error}")
        names = getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                yield f"{info.name}.{name}", obj


def test_every_public_function_and_class_says_where_it_is_taught():
    silent, missing = [], []
    for qualified, obj in public_objects():
        found = WHERE.findall(inspect.getdoc(obj) or "")
        if not found:
            silent.append(qualified)
        for kind, number in found:
            folder = "notebooks" if kind.lower() == "notebook" else "solutions"
            if not list((REPO / folder).glob(f"{number}_*.ipynb")):
                missing.append(f"{qualified}: {kind} {number}")
    assert not silent, f"say where these are taught ('Taught in notebook NN, §k.'): {silent}"
    assert not missing, f"these docstrings name a notebook that does not exist: {missing}"
