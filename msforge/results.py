"""Host-side bookkeeping of logged values: training steps' outputs read back when first needed, batch-size-weighted
epoch means, conversion to Python floats."""
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np


def to_float(value, name="value"):
    """A logged value (Python number, numpy scalar, 0-d or 1-element Tensor) as a Python float."""
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"logged metric {name!r} must be a scalar, got an array of shape {array.shape}")
    return float(array.reshape(()))


class StepOutputs(Mapping):
    """One training step's outputs by name, as Python floats; each is read back from its Tensor the first time it is
    looked at, so a step whose outputs nobody reads costs no host sync."""

    def __init__(self, items):
        self._values = dict(items)
        self._floats = None

    def floats(self) -> dict:
        if self._floats is None:
            self._floats = {name: to_float(value, name) for name, value in self._values.items()}
        return self._floats

    def __getitem__(self, name):
        return self.floats()[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return f"StepOutputs({self.floats()!r})"


class PendingStep(NamedTuple):
    """A training step whose outputs the Trainer has not read back yet: its outputs and batch size, where it ran,
    whether it updated the weights, and under loss scaling its ``finite`` flag and ``scale`` (Tensors; else None,
    and its loss is checked instead)."""

    outputs: StepOutputs
    batch_size: int
    global_step: int
    epoch: int
    batch_idx: int
    is_update: bool
    finite: object
    scale: object


class EpochMeans:
    """Accumulates weighted sums per metric name; ``means()`` gives the epoch values."""

    def __init__(self):
        self.sums = {}
        self.weights = {}

    def add(self, name, value, weight=1.0):
        self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def means(self):
        return {k: (self.sums[k] / self.weights[k] if self.weights[k] else math.nan) for k in self.sums}

    def __bool__(self):
        return bool(self.sums)

    def state_dict(self):
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state):
        self.sums, self.weights = dict(state["sums"]), dict(state["weights"])
