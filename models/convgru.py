"""ConvGRU: the ConvLSTM encoder-forecaster with another recurrent cell.

Another cell in the encoder-forecaster = a cell that follows the state protocol (``zero_state`` returns a tuple whose
first item is the output ``h``; ``construct(x, *state)`` returns the next tuple) and a ConvLSTMModule subclass that
names it. A model of another family subclasses ``models.base.VideoPredictionModule`` directly.
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)
from msforge.layers import GroupNorm

import mindspore as ms
from mindspore import nn, ops

from models.convlstm import ConvLSTMModule, conv2d, group_count, tanh


class ConvGRUCell(nn.Cell):
    """``r, z = sigmoid(GN(conv([x, h])))``; ``n = tanh(GN(conv([x, r*h])))``; ``h' = (1-z)*h + z*n``."""

    n_states = 1

    def __init__(self, in_channels, hidden, kernel_size=5, norm=True):
        super().__init__()
        self.hidden = hidden
        self.gates = conv2d(in_channels + hidden, 2 * hidden, kernel_size)
        self.candidate = conv2d(in_channels + hidden, hidden, kernel_size)
        self.gates_norm = GroupNorm(group_count(2 * hidden), 2 * hidden) if norm else None
        self.candidate_norm = GroupNorm(group_count(hidden), hidden) if norm else None

    def zero_state(self, batch, height, width):
        return (ops.zeros((batch, self.hidden, height, width), ms.float32),)

    def construct(self, x, h):
        gates = self.gates(ops.concat((x, h), 1))
        if self.gates_norm is not None:
            gates = self.gates_norm(gates)
        r, z = ops.split(ops.sigmoid(gates), self.hidden, 1)
        n = self.candidate(ops.concat((x, r * h), 1))
        if self.candidate_norm is not None:
            n = self.candidate_norm(n)
        h = (1 - z) * h + z * tanh(n)
        return (h,)


class ConvGRUModule(ConvLSTMModule):
    """Same presets, arguments and steps as :class:`ConvLSTMModule`, with ConvGRU cells."""

    cell_class = ConvGRUCell
