"""ConvLSTM encoder-forecaster for video prediction (Shi et al. 2015; MindSpore ModelZoo ConvLSTM).

Three pieces, each usable alone:

* :class:`ConvLSTMCell`: one recurrent cell. Every cell in msforge's models follows the same small protocol so the
  encoder-forecaster treats LSTM ``(h, c)`` and GRU ``(h,)`` states alike:

  - ``cell.zero_state(batch, height, width)`` returns the initial state, a tuple of Tensors whose first item is ``h``;
  - ``cell(x, *state)`` returns the next state, a tuple of the same length; ``state[0]`` is the cell's output.

* :class:`EncoderForecaster`: a stack of cells over levels of decreasing resolution, unrolled over a fixed number of
  frames. Its architecture is a plain dict of numbers (see :func:`seed_config`, :func:`cpu_small_config`); the cell
  class is injected (``cell=ConvGRUCell`` gives a ConvGRU with the same layout).

* :class:`ConvLSTMModule`: the model on :class:`models.base.VideoPredictionModule`, which does the training /
  validation / test / predict steps, metrics, optimizer and image logging. Subclasses change ``cell_class`` to swap
  the recurrent cell (see ``models/convgru.py``).

Tensors are ``(B, T, C, H, W)`` float32 with values in [0, 1].
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)
from msforge.layers import Conv2d, GroupNorm, GroupNormLSTMGates, LSTMGates, tanh  # faster on CPU; nn's parameters

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from models.base import BASE_ARGUMENTS, DEFAULT_FRAME_SHAPE, VideoPredictionModule

__all__ = [
    "ConvLSTMCell", "EncoderForecaster", "ConvLSTMModule", "seed_config", "cpu_small_config", "PRESETS",
    "space_to_depth", "depth_to_space", "group_count", "count_parameters", "conv2d", "tanh",
]

OUTPUT_ACTIVATIONS = ("none", "sigmoid", "leaky_relu")


# -- helpers -------------------------------------------------------------------------------------------------------
def group_count(channels, per_group=32):
    """GroupNorm groups for ``channels``: ``channels // 32`` (at least 1), lowered until it divides ``channels``."""
    groups = max(1, channels // per_group)
    while channels % groups:
        groups -= 1
    return groups


def space_to_depth(x, p):
    """``(N, C, H, W) -> (N, C*p*p, H/p, W/p)``; channel ``c*p*p + i*p + j`` holds pixel ``(p*a + i, p*b + j)``.

    Works on MindSpore Tensors (in graph mode too) and on numpy arrays. ``p == 1`` returns ``x`` unchanged.
    """
    if p == 1:
        return x
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * p * p, h // p, w // p)


def depth_to_space(x, p):
    """Exact inverse of :func:`space_to_depth`: ``(N, C*p*p, h, w) -> (N, C, h*p, w*p)``."""
    if p == 1:
        return x
    n, cpp, h, w = x.shape
    c = cpp // (p * p)
    x = x.reshape(n, c, p, p, h, w).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c, h * p, w * p)


def count_parameters(cell):
    """Number of trainable scalars of a Cell."""
    return int(sum(np.prod(p.shape) for p in cell.trainable_params()))


def conv2d(in_channels, out_channels, kernel_size, stride=1):
    """Conv2d with bias and "same" output size for odd kernels (``ceil(H / stride)``).

    Padding is an explicit, symmetric ``k // 2`` (PyTorch's ``padding=k//2``) rather than ``pad_mode="same"``,
    which pads stride-2 convs asymmetrically; the output size is the same. ``msforge.layers.Conv2d``: the stride-1
    ones run oneDNN's blocked-layout kernels on CPU."""
    return Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                  padding=kernel_size // 2, has_bias=True)


# -- cell ----------------------------------------------------------------------------------------------------------
class ConvLSTMCell(nn.Cell):
    """ConvLSTM cell: one convolution over ``concat(x, h)`` gives the four gates (i, f, g, o order, as PyTorch).

    ``gates = GroupNorm(conv([x, h]))`` (norm optional); ``i, f, o = sigmoid``, ``g = tanh``;
    ``c' = f*c + i*g``; ``h' = o*tanh(c')``. ``construct(x, h, c) -> (h', c')``.
    """

    n_states = 2

    def __init__(self, in_channels, hidden, kernel_size=5, norm=True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvLSTMCell(kernel_size={kernel_size}): must be odd to keep the frame size")
        self.in_channels, self.hidden = in_channels, hidden
        self.conv = conv2d(in_channels + hidden, 4 * hidden, kernel_size)
        self.norm = GroupNorm(group_count(4 * hidden), 4 * hidden) if norm else None
        # the gate nonlinearities and c', h' in one kernel on CPU, the GroupNorm in it when there is one (self.norm
        # then only holds its Parameters, under the names checkpoints know)
        self.update = LSTMGates() if self.norm is None else GroupNormLSTMGates(self.norm.num_groups, self.norm.eps)

    def zero_state(self, batch, height, width):
        zeros = ops.zeros((batch, self.hidden, height, width), ms.float32)
        return (zeros, zeros)

    def construct(self, x, h, c):
        gates = self.conv(ops.concat((x, h), 1))
        if self.norm is None:
            return self.update(gates, c)
        return self.update(gates, c, self.norm.gamma, self.norm.beta)


# -- architecture configs ------------------------------------------------------------------------------------------
def seed_config(**overrides):
    """The MindSpore ModelZoo ConvLSTM (jhhuang96/ConvLSTM-PyTorch layout) for 64x64 Moving MNIST: 9,032,225 params.

    encoder  conv 1->16 3x3 | ConvLSTM 16->64 5x5 @64 | conv 64->64 s2 | ConvLSTM 64->96 5x5 @32
             | conv 96->96 s2 | ConvLSTM 96->96 5x5 @16
    forecast ConvLSTM 96->96 @16 (fed zeros) | deconv 96->96 4x4 s2 | ConvLSTM 96->96 @32 | deconv 96->96 4x4 s2
             | ConvLSTM 96->64 @64 | conv 64->16 3x3 | conv 16->1 1x1
    The zoo puts a LeakyReLU on the last conv too; here the output is linear (``output_activation="none"``): see
    :class:`EncoderForecaster`. ``seed_config(output_activation="leaky_relu")`` is the zoo's exact network.
    """
    cfg = dict(in_channels=1, patch=1, hidden=(64, 96, 96), kernel_sizes=(5, 5, 5), downsample=(False, True, True),
               stem_channels=16, head_channels=16, forecaster_input_channels=96, norm=True, n_target=10,
               feed_predictions=False, output_activation="none")
    cfg.update(overrides)
    return cfg


def cpu_small_config(**overrides):
    """ConvLSTM at 16x16 on 4x4 patches (as the ConvLSTM paper): 2 encoder + 2 forecaster cells of 64, 5x5, no stem,
    no downsampling, a 1x1 output conv: 2,666,512 params. The forecaster's first cell is fed zero frames (16
    channels), or its own previous prediction with ``feed_predictions=True`` (same parameter count)."""
    cfg = dict(in_channels=1, patch=4, hidden=(64, 64), kernel_sizes=(5, 5), downsample=(False, False),
               stem_channels=None, head_channels=None, forecaster_input_channels=None, norm=True, n_target=10,
               feed_predictions=False, output_activation="none")
    cfg.update(overrides)
    return cfg


PRESETS = {"seed": seed_config, "cpu_small": cpu_small_config}


# -- encoder-forecaster --------------------------------------------------------------------------------------------
class EncoderForecaster(nn.Cell):
    """Encoder-forecaster of recurrent conv cells, generic over the architecture and the cell class.

    Level ``l`` (0 = full resolution) has a cell of ``hidden[l]`` channels and ``kernel_sizes[l]`` kernels.
    Encoder, bottom-up: frames -> space-to-depth(patch) -> [stem conv 3x3] -> for each level: [stride-2 conv 3x3 if
    ``downsample[l]``, channels kept] -> cell. Forecaster, top-down, its cells started from the encoder's final states:
    the top cell is fed zeros (``forecaster_input_channels`` of them, default the frame's channels at that
    resolution) or, with ``feed_predictions``, the previous predicted frame (the last input frame first), brought to
    the top resolution by space-to-depth; each level is followed by a 4x4 stride-2 transposed conv where the encoder
    downsampled; then [head conv 3x3] -> 1x1 conv to the frame's channels -> output activation -> depth-to-space.
    Every conv but the last is followed by LeakyReLU(0.2).

    Output activation (``output_activation``): "none" (default), "sigmoid" or "leaky_relu" (the zoo's choice).
    Targets are in [0, 1], mostly exact 0 background on Moving MNIST. A linear output reaches 0 and 1 without
    saturating; the steps clip predictions to [0, 1] for metrics and images. A sigmoid bounds the output but its
    gradient vanishes exactly where most pixels sit (0), slowing MSE training; the zoo's LeakyReLU just shrinks
    negative outputs 5x, i.e. a kinked linear output that bounds nothing.

    Time is unrolled with Python loops over the static frame count (graph mode unrolls them). The convs that are not
    recurrent (stem, downsampling, upsampling, head) run once over all ``B*T`` frames of a level, not per step.
    ``construct(x: (B, T_in, C, H, W)) -> (B, n_target, C, H, W)``; H and W must be divisible by
    ``patch * 2**(number of downsampling levels)``. ``EncoderForecaster(**seed_config())`` is the seed network,
    ``EncoderForecaster(ConvGRUCell, **seed_config())`` its ConvGRU twin.
    """

    def __init__(self, cell=ConvLSTMCell, in_channels=1, patch=1, hidden=(64, 96, 96), kernel_sizes=5,
                 downsample=None, stem_channels=None, head_channels=None, forecaster_input_channels=None, norm=True,
                 n_target=10, feed_predictions=False, output_activation="none", negative_slope=0.2):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        levels = len(hidden)
        kernel_sizes = (kernel_sizes,) * levels if isinstance(kernel_sizes, int) else tuple(kernel_sizes)
        downsample = (False,) * levels if downsample is None else tuple(bool(d) for d in downsample)
        if levels == 0 or len(kernel_sizes) != levels or len(downsample) != levels:
            raise ValueError(f"hidden {hidden}, kernel_sizes {kernel_sizes} and downsample {downsample} must be "
                             "non-empty and of equal length (one entry per level)")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation={output_activation!r}: expected one of {OUTPUT_ACTIVATIONS}")
        self.patch, self.n_target, self.levels = int(patch), int(n_target), levels
        self.hidden, self.downsample = hidden, downsample
        self.frame_channels = in_channels * self.patch ** 2  # channels of a frame after space-to-depth
        self.top_factor = 2 ** sum(downsample)  # resolution ratio between level 0 input and the top level
        feedback_channels = self.frame_channels * self.top_factor ** 2
        if forecaster_input_channels is None:
            forecaster_input_channels = feedback_channels
        if feed_predictions and forecaster_input_channels != feedback_channels:
            raise ValueError(f"feed_predictions=True feeds the top forecaster cell {feedback_channels} channels (a "
                             f"frame at the top resolution), but forecaster_input_channels={forecaster_input_channels}"
                             "; pass forecaster_input_channels=None")
        self.feed_predictions = bool(feed_predictions)
        self.fc_in_channels = int(forecaster_input_channels)
        self.output_activation = output_activation
        self.act = nn.LeakyReLU(negative_slope)

        channels = self.frame_channels
        self.stem = None
        if stem_channels:
            self.stem = conv2d(channels, stem_channels, 3)
            channels = stem_channels
        enc_cells, fc_cells, down, up = [], [], [], []
        down_index, up_index = [], []
        for level in range(levels):
            if downsample[level]:
                down_index.append(len(down))
                down.append(conv2d(channels, channels, 3, stride=2))
            else:
                down_index.append(-1)
            enc_cells.append(cell(channels, hidden[level], kernel_sizes[level], norm=norm))
            fc_in = self.fc_in_channels if level == levels - 1 else hidden[level + 1]
            fc_cells.append(cell(fc_in, hidden[level], kernel_sizes[level], norm=norm))
            if downsample[level]:
                up_index.append(len(up))
                up.append(nn.Conv2dTranspose(hidden[level], hidden[level], 4, stride=2, pad_mode="pad", padding=1,
                                             has_bias=True))
            else:
                up_index.append(-1)
            channels = hidden[level]
        self.enc_cells, self.fc_cells = nn.CellList(enc_cells), nn.CellList(fc_cells)
        self.down, self.up = nn.CellList(down), nn.CellList(up)
        self.down_index, self.up_index = tuple(down_index), tuple(up_index)
        self.head = conv2d(hidden[0], head_channels, 3) if head_channels else None
        self.out = conv2d(head_channels or hidden[0], self.frame_channels, 1)

    # ---------------------------------------------------------------------------------------------------------------
    def _unroll(self, cell, seq, state):
        """Run ``cell`` over ``seq`` (B, T, C, h, w) from ``state``; return the stacked outputs and the last state."""
        outputs = []
        for frame in ops.unstack(seq, 1):  # one unstack, not a strided slice seq[:, t] per step (bench/formulations.py)
            state = cell(frame, *state)
            outputs.append(state[0])
        return ops.stack(outputs, 1), state

    def _output(self, frames):
        """Head over ``(N, hidden[0], h, w)`` -> frames ``(N, C*p*p, h, w)`` after the output activation."""
        if self.head is not None:
            frames = self.act(self.head(frames))
        frames = self.out(frames)
        if self.output_activation == "sigmoid":
            frames = ops.sigmoid(frames)
        elif self.output_activation == "leaky_relu":
            frames = self.act(frames)
        return frames

    def _upsample(self, level, frames):
        if self.up_index[level] >= 0:
            frames = self.act(self.up[self.up_index[level]](frames))
        return frames

    def encode(self, x):
        """Encoder over ``x`` (B, T, C, H, W); returns the final state tuple of every level, bottom first."""
        b, t, c, height, width = x.shape
        frames = space_to_depth(x.reshape(b * t, c, height, width), self.patch)
        if self.stem is not None:
            frames = self.act(self.stem(frames))
        states = ()
        for level in range(self.levels):
            if self.down_index[level] >= 0:
                frames = self.act(self.down[self.down_index[level]](frames))
            _, ch, h, w = frames.shape
            cell = self.enc_cells[level]
            outputs, state = self._unroll(cell, frames.reshape(b, t, ch, h, w), cell.zero_state(b, h, w))
            states = states + (state,)
            frames = outputs.reshape(b * t, self.hidden[level], h, w)
        return states

    def construct(self, x):
        b, _, c, height, width = x.shape
        states = self.encode(x)
        p, n = self.patch, self.n_target
        top = self.levels - 1
        if self.feed_predictions:
            frames = self._forecast_fed(x, states)
        else:  # level by level: the non-recurrent convs run once over all B*n frames
            h_top, w_top = height // p // self.top_factor, width // p // self.top_factor
            seq = ops.zeros((b, n, self.fc_in_channels, h_top, w_top), ms.float32)
            for level in range(top, -1, -1):
                outputs, _ = self._unroll(self.fc_cells[level], seq, states[level])
                _, _, ch, h, w = outputs.shape
                upsampled = self._upsample(level, outputs.reshape(b * n, ch, h, w))
                _, ch, h, w = upsampled.shape
                seq = upsampled.reshape(b, n, ch, h, w)
            _, _, ch, h, w = seq.shape
            frames = self._output(seq.reshape(b * n, ch, h, w))
        frames = depth_to_space(frames, p)
        return frames.reshape(b, n, c, height, width)

    def _forecast_fed(self, x, states):
        """Forecaster fed its own previous prediction, step by step; returns frames (B*n, C*p*p, h, w)."""
        b, _, c, height, width = x.shape
        p, top = self.patch, self.levels - 1
        prev = space_to_depth(x[:, -1], p)  # last observed frame, (B, C*p*p, H/p, W/p)
        predictions = []
        for _ in range(self.n_target):
            inp = space_to_depth(prev, self.top_factor)
            new_states = ()
            for level in range(top, -1, -1):
                state = self.fc_cells[level](inp, *states[level])
                new_states = (state,) + new_states
                inp = self._upsample(level, state[0])
            states = new_states
            prev = self._output(inp)
            predictions.append(prev)
        return ops.stack(predictions, 1).reshape(b * self.n_target, c * p * p, height // p, width // p)


# -- msforge Module ------------------------------------------------------------------------------------------------
class ConvLSTMModule(VideoPredictionModule):
    """ConvLSTM encoder-forecaster on the video-prediction base (``models/base.py``: steps, loss, metrics, images,
    optimizer; ``lr``, ``weight_decay``, ``loss``, ``in_frames``, ``out_frames``, ``frame_shape`` are its arguments).

    ``preset``: "cpu_small" or "seed" (see :data:`PRESETS`); any architecture key of the preset can be overridden by
    keyword (``patch=2, hidden=(32, 32), kernel_sizes=(3, 3), feed_predictions=True, ...``). The architecture's
    ``n_target`` and ``in_channels`` are the base's ``out_frames`` and ``frame_shape[0]``; either spelling sets both.
    Subclasses swap the recurrent cell by setting ``cell_class``.
    """

    cell_class = ConvLSTMCell

    def __init__(self, preset="cpu_small", **kwargs):
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r}: expected one of {sorted(PRESETS)}")
        config = PRESETS[preset]()
        unknown = sorted(set(kwargs) - set(config) - set(BASE_ARGUMENTS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown argument(s) {unknown}; architecture keys are "
                            f"{sorted(config)}, the base's {list(BASE_ARGUMENTS)}")
        arch = {key: kwargs.pop(key) for key in list(kwargs) if key in config}
        # the architecture's own names for two of the base's arguments, kept so older configs still build
        if "n_target" in arch:
            kwargs.setdefault("out_frames", arch["n_target"])
        if "in_channels" in arch:
            kwargs.setdefault("frame_shape", (arch["in_channels"], *DEFAULT_FRAME_SHAPE[1:]))
        super().__init__(**kwargs)
        for key, base_key, value in (("n_target", "out_frames", self.out_frames),
                                     ("in_channels", "frame_shape[0]", self.frame_shape[0])):
            if arch.setdefault(key, value) != value:
                raise ValueError(f"{type(self).__name__}: {key}={arch[key]!r} and {base_key}={value!r} disagree; "
                                 f"give only {base_key.split('[')[0]}")
        config.update(arch)
        self.config = config
        self.net = EncoderForecaster(cell=self.cell_class, **config)

    def construct(self, inputs):
        return self.net(inputs)
