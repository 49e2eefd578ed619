"""Host-side bookkeeping of logged values: batch-size-weighted epoch means and conversion to Python floats."""
import math

import numpy as np


def to_float(value, name="value"):
    """A logged value (Python number, numpy scalar, 0-d or 1-element Tensor) as a Python float."""
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"logged metric {name!r} must be a scalar, got an array of shape {array.shape}")
    return float(array.reshape(()))


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
