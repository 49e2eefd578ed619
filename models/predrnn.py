"""PredRNN: stacked spatiotemporal LSTM (ST-LSTM) cells with a zigzag spatiotemporal memory.

Wang, Long, Wang, Gao, Yu, "PredRNN: Recurrent Neural Networks for Predictive Learning using Spatiotemporal LSTMs",
NeurIPS 2017. Written here from the paper's ST-LSTM equations; ``*`` is a convolution, ``o`` the elementwise product::

    g  = tanh(W_xg * X + W_hg * H[t-1] + b_g)          g' = tanh(W'_xg * X + W_mg * M + b'_g)
    i  = sigmoid(W_xi * X + W_hi * H[t-1] + b_i)       i' = sigmoid(W'_xi * X + W_mi * M + b'_i)
    f  = sigmoid(W_xf * X + W_hf * H[t-1] + b_f)       f' = sigmoid(W'_xf * X + W_mf * M + b'_f)
    C[t] = f o C[t-1] + i o g                          M' = f' o M + i' o g'
    o  = sigmoid(W_xo * X + W_ho * H[t-1] + W_co * C[t] + W_mo * M' + b_o)
    H[t] = o o tanh(W_1x1 * [C[t], M'])

``C`` is each layer's temporal memory (carried from t-1 to t in the same layer). ``M``, the spatiotemporal memory, is
one tensor that zigzags: layer l reads the ``M`` layer l-1 wrote at the same step, and the bottom layer reads the
``M`` the top layer wrote at the previous step; hence all layers have the same width. The forget gates get a constant
``forget_bias`` (1.0) added, as is usual for LSTMs. Optional normalisation of each gate convolution (the paper's
code uses layer norm): ``norm="layer"`` (GroupNorm with one group: normalised over (C, H, W), per-channel affine) or
``"group"`` (GroupNorm, 32 channels a group); a normalised convolution has no bias (the norm's shift replaces it).

Frames are cut into ``patch x patch`` patches stacked into channels (space-to-depth; the paper's Moving MNIST setup:
64x64 frames, patch 4, 16x16x16 inputs). A 1x1 convolution reads a frame out of the top layer's ``H``.

Forecasting: the network reads the ``in_frames`` inputs, then feeds itself its previous prediction. Training uses
scheduled sampling (Bengio et al., NeurIPS 2015, as the PredRNN paper trains): each forecast step reads the true
frame with probability ``eta``, its own prediction otherwise, ``eta`` falling linearly with the training step
(:func:`scheduled_sampling_eta`). The coin flips (:func:`sampling_mask`) are drawn on the host from (seed, global
step) and written into a non-trainable Parameter before each step, so a resumed run draws the same ones.

Tensors are ``(N, T, C, H, W)`` float32 in [0, 1].
"""
from msforge.layers import Conv2d, GroupNorm, LSTMGates, tanh  # first: msforge caps oneDNN's ISA before mindspore loads

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from models.base import VideoPredictionModule
from models.convlstm import depth_to_space, group_count, space_to_depth

__all__ = ["STLSTMCell", "PredRNNNet", "PredRNN", "scheduled_sampling_eta", "sampling_mask", "mask_parameter", "NORMS"]

NORMS = (None, "group", "layer")


# -- scheduled sampling (host side, pure) ------------------------------------------------------------------------------
def scheduled_sampling_eta(step, start_value=1.0, stop_iter=50000, changing_rate=None):
    """Probability that a forecast step reads the true frame, at 0-based global step ``step``.

    Linear decay (Bengio et al. 2015; PredRNN's training): ``start_value - changing_rate * step``, floored at 0,
    and 0 from ``stop_iter`` on. ``changing_rate=None`` is ``start_value / stop_iter`` (reaches 0 at ``stop_iter``).
    """
    rate = start_value / stop_iter if changing_rate is None else changing_rate
    if step >= stop_iter:
        return 0.0
    return max(0.0, start_value - rate * step)


def sampling_mask(seed, step, rows, probabilities):
    """Coin flips for one training step: float32 ``(rows, len(probabilities), 1, 1, 1)``, entry ``[n, k]`` is 1
    (read the true frame) with probability ``probabilities[k]``, else 0 (read the prediction).

    A function of (seed, step) only, so a resumed run draws the same mask at the same step."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    draws = np.random.default_rng((int(seed), int(step))).random((rows, probabilities.size))
    return (draws < probabilities[None, :]).astype(np.float32).reshape(rows, probabilities.size, 1, 1, 1)


def mask_parameter(rows, columns):
    """The non-trainable Parameter the host writes each step's coin flips into: ``(rows, columns, 1, 1, 1)``, ones
    (read the true frames) until the first write; at least one column, so it always has a shape."""
    return Parameter(Tensor(np.ones((rows, max(columns, 1), 1, 1, 1), np.float32)), name="sampling_mask",
                     requires_grad=False)


def _positive_int(cls_name, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{cls_name}({name}={value!r}): must be a positive int")


# -- cell --------------------------------------------------------------------------------------------------------------
def gate_conv(in_channels, out_channels, kernel_size, has_bias):
    """Stride-1 convolution keeping the frame size (zero padding ``k // 2``)."""
    return Conv2d(in_channels, out_channels, kernel_size, pad_mode="pad", padding=kernel_size // 2,
                  has_bias=has_bias)


def gate_norm(norm, channels):
    if norm is None:
        return None
    return GroupNorm(1 if norm == "layer" else group_count(channels), channels)


class STLSTMCell(nn.Cell):
    """One spatiotemporal LSTM cell (the module docstring's equations).

    Convolutions and their output blocks (in this order on the channel axis):
    ``conv_x``: X -> (i, f, g, o, i', f', g'), 7 x hidden; ``conv_h``: H -> (i, f, g, o), 4 x hidden;
    ``conv_m``: M -> (i', f', g'), 3 x hidden; ``conv_o``: [C, M'] -> o, hidden (the W_co, W_mo terms);
    ``conv_fuse``: the 1x1 W_1x1 over [C, M'], no bias. Each gate convolution is followed by ``norm`` if set.

    ``construct(x, h, c, m) -> (h', c', m', delta_c, delta_m)``: the new states and the increments ``i o g`` and
    ``i' o g'`` (PredRNN-v2's decoupling loss compares these; computed only with ``increments=True``, else the
    increments returned are ``c'`` and ``m'``, unused).

    The two memory updates ``f o C + i o g`` run in msforge.layers.LSTMGates' fused kernel (fewer, larger ops on CPU):
    it takes four gate blocks and also returns ``sigmoid(4th) o tanh(new memory)``, which is not used here.
    """

    def __init__(self, in_channels, hidden, kernel_size=3, norm=None, forget_bias=1.0):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"STLSTMCell(kernel_size={kernel_size!r}): must be an odd positive int")
        if norm not in NORMS:
            raise ValueError(f"STLSTMCell(norm={norm!r}): expected one of {NORMS}")
        self.in_channels, self.hidden, self.forget_bias = in_channels, hidden, float(forget_bias)
        bias = norm is None
        self.conv_x = gate_conv(in_channels, 7 * hidden, kernel_size, bias)
        self.conv_h = gate_conv(hidden, 4 * hidden, kernel_size, bias)
        self.conv_m = gate_conv(hidden, 3 * hidden, kernel_size, bias)
        self.conv_o = gate_conv(2 * hidden, hidden, kernel_size, bias)
        self.conv_fuse = gate_conv(2 * hidden, hidden, 1, False)
        self.norm_x, self.norm_h = gate_norm(norm, 7 * hidden), gate_norm(norm, 4 * hidden)
        self.norm_m, self.norm_o = gate_norm(norm, 3 * hidden), gate_norm(norm, hidden)
        offset = np.zeros((1, 4 * hidden, 1, 1), np.float32)
        offset[:, hidden:2 * hidden] = forget_bias  # added to the f block of (i, f, g, o)
        self.forget_offset = Tensor(offset)
        self.update = LSTMGates()

    @staticmethod
    def _gates(conv, norm, x):
        y = conv(x)
        return y if norm is None else norm(y)

    def construct(self, x, h, c, m, increments=False):
        n = self.hidden
        x_gates = self._gates(self.conv_x, self.norm_x, x)
        temporal = x_gates[:, :4 * n] + self._gates(self.conv_h, self.norm_h, h) + self.forget_offset
        spatial = x_gates[:, 4 * n:] + self._gates(self.conv_m, self.norm_m, m) + self.forget_offset[:, :3 * n]
        _, c_new = self.update(temporal, c)
        # LSTMGates reads four blocks; the 4th (the o pre-activation, any block would do) only feeds its unused output
        _, m_new = self.update(ops.concat((spatial, temporal[:, 3 * n:]), 1), m)
        memory = ops.concat((c_new, m_new), 1)
        o = ops.sigmoid(temporal[:, 3 * n:] + self._gates(self.conv_o, self.norm_o, memory))
        h_new = o * tanh(self.conv_fuse(memory))
        if not increments:
            return h_new, c_new, m_new, c_new, m_new
        delta_c = ops.sigmoid(temporal[:, :n]) * tanh(temporal[:, 2 * n:3 * n])
        delta_m = ops.sigmoid(spatial[:, :n]) * tanh(spatial[:, 2 * n:])
        return h_new, c_new, m_new, delta_c, delta_m


# -- network -----------------------------------------------------------------------------------------------------------
class PredRNNNet(nn.Cell):
    """``num_layers`` ST-LSTM cells of ``hidden`` channels over ``patch x patch`` patches, a 1x1 readout conv.

    :meth:`rollout` is the whole recurrence; ``construct(inputs, out_frames)`` is its inference path (predictions fed
    back). Frame ``H`` and ``W`` must be divisible by ``patch``.
    """

    def __init__(self, in_channels=1, patch=4, num_layers=3, hidden=64, kernel_size=3, norm=None, forget_bias=1.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("patch", patch), ("num_layers", num_layers),
                            ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PredRNNNet({name}={value!r}): must be a positive int")
        self.patch, self.num_layers, self.hidden = patch, num_layers, hidden
        self.frame_channels = in_channels * patch * patch
        self.st_lstm = nn.CellList([
            STLSTMCell(self.frame_channels if layer == 0 else hidden, hidden, kernel_size, norm, forget_bias)
            for layer in range(num_layers)])
        self.readout = Conv2d(hidden, self.frame_channels, 1, has_bias=True)

    def _to_patches(self, frames):
        n, t, c, height, width = frames.shape
        patches = space_to_depth(frames.reshape(n * t, c, height, width), self.patch)
        return ops.unstack(patches.reshape(n, t, self.frame_channels, height // self.patch, width // self.patch), 1)

    def rollout(self, inputs, out_frames, targets=None, forecast_mask=None, input_mask=None, context=False,
                deltas=False):
        """Run the recurrence over ``in_frames + out_frames - 1`` steps.

        Steps and frames count from 0. Step ``t`` reads input frame ``t`` while ``t < in_frames``, then the
        previous prediction, or, where ``forecast_mask[:, t - in_frames]`` is 1, the true frame
        ``targets[:, t - in_frames]``. ``input_mask`` (PredRNN-v2's reverse scheduled sampling) likewise mixes the
        previous prediction into input frames 1 .. in_frames - 1: ``input_mask[:, t - 1]`` is 1 for the true frame.
        Masks are (N, K, 1, 1, 1) of 0s and 1s.

        Returns ``(frames, increments)``: ``frames`` (N, out_frames, C, H, W), or with ``context=True`` every
        prediction, of input frames 1 .. in_frames - 1 too (N, in_frames - 1 + out_frames, ...); ``increments`` is, with
        ``deltas=True``, ``(deltas_c, deltas_m)``: two tuples of the increments of C and M, one per step and layer
        (else two empty tuples).
        """
        n, in_frames, c, height, width = inputs.shape
        frames_in = self._to_patches(inputs)
        frames_true = self._to_patches(targets) if targets is not None else None
        zeros = ops.zeros((n, self.hidden, height // self.patch, width // self.patch), inputs.dtype)
        hs, cs = (zeros,) * self.num_layers, (zeros,) * self.num_layers
        memory = zeros
        predictions, deltas_c, deltas_m = [], [], []
        prediction = zeros  # replaced at step 0; only read from step 1 on
        first_output = 0 if context else in_frames - 1
        for t in range(in_frames + out_frames - 1):
            if t < in_frames:
                x = frames_in[t]
                if input_mask is not None and t > 0:
                    x = input_mask[:, t - 1] * x + (1.0 - input_mask[:, t - 1]) * prediction
            elif forecast_mask is not None:
                k = t - in_frames
                x = forecast_mask[:, k] * frames_true[k] + (1.0 - forecast_mask[:, k]) * prediction
            else:
                x = prediction
            new_hs, new_cs = (), ()
            for layer in range(self.num_layers):
                x, c_next, memory, delta_c, delta_m = self.st_lstm[layer](x, hs[layer], cs[layer], memory, deltas)
                new_hs, new_cs = new_hs + (x,), new_cs + (c_next,)
                if deltas:
                    deltas_c.append(delta_c)
                    deltas_m.append(delta_m)
            hs, cs = new_hs, new_cs
            # the readout is needed where a prediction is fed back or returned
            if t >= first_output or input_mask is not None:
                prediction = self.readout(x)
                if t >= first_output:
                    predictions.append(prediction)
        out = ops.stack(predictions, 1)
        steps = out.shape[1]
        out = depth_to_space(out.reshape(n * steps, self.frame_channels, height // self.patch, width // self.patch),
                             self.patch)
        return out.reshape(n, steps, c, height, width), (tuple(deltas_c), tuple(deltas_m))

    def construct(self, inputs, out_frames):
        return self.rollout(inputs, out_frames)[0]


# -- msforge module ----------------------------------------------------------------------------------------------------
class PredRNN(VideoPredictionModule):
    """PredRNN (Wang et al., NeurIPS 2017) as an msforge video-prediction model.

    Architecture: ``patch`` (space-to-depth), ``num_layers`` ST-LSTM cells of ``hidden`` channels and
    ``kernel_size`` kernels (one width for all: the spatiotemporal memory passes through every layer), ``norm``
    (None, "layer" or "group" on each gate convolution), ``forget_bias``. The frame's H and W must be divisible by
    ``patch``.

    Scheduled sampling (training only): with ``scheduled_sampling=True`` forecast step k reads the true frame where
    the step's mask is 1, with probability :func:`scheduled_sampling_eta` (``sampling_start_value``, falling by
    ``sampling_changing_rate`` per step, default ``start / sampling_stop_iter``, 0 from ``sampling_stop_iter`` on).
    The mask is drawn from (``sampling_seed``, global step) in :meth:`on_train_batch_start` into the Parameter
    ``sampling_mask`` of ``sampling_max_batch`` rows (a fixed shape, so checkpoints load whatever the batch size; a
    training batch may not be larger). Validation, test and prediction always feed the predictions back.

    ``context_loss=True`` (the papers' code trains this way): the predictions made while reading the inputs (of
    input frames 2..in_frames) are trained too, as the extra loss ``context`` = ``(in_frames - 1) / out_frames`` x
    the loss on them, so every predicted frame weighs the same.
    """

    def __init__(self, patch=4, num_layers=3, hidden=64, kernel_size=3, norm=None, forget_bias=1.0,
                 scheduled_sampling=True, sampling_start_value=1.0, sampling_stop_iter=50000,
                 sampling_changing_rate=None, sampling_seed=0, sampling_max_batch=64, context_loss=True, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        channels, height, width = self.frame_shape
        _positive_int(name, "patch", patch)
        if height % patch or width % patch:
            raise ValueError(f"{name}(patch={patch}): frame_shape {self.frame_shape} has H, W not divisible by it")
        if not 0.0 <= sampling_start_value <= 1.0:
            raise ValueError(f"{name}(sampling_start_value={sampling_start_value!r}): must be in [0, 1]")
        _positive_int(name, "sampling_stop_iter", sampling_stop_iter)
        _positive_int(name, "sampling_max_batch", sampling_max_batch)
        if sampling_changing_rate is not None and not sampling_changing_rate >= 0:
            raise ValueError(f"{name}(sampling_changing_rate={sampling_changing_rate!r}): must be >= 0 or None")
        self.net = PredRNNNet(channels, patch, num_layers, hidden, kernel_size, norm, forget_bias)
        self.scheduled_sampling, self.context_loss = bool(scheduled_sampling), bool(context_loss)
        self.schedule = dict(start_value=float(sampling_start_value), stop_iter=int(sampling_stop_iter),
                             changing_rate=sampling_changing_rate)
        self.sampling_seed, self.sampling_max_batch = int(sampling_seed), int(sampling_max_batch)
        self.sampling_mask = mask_parameter(self.sampling_max_batch, self.out_frames - 1)

    def construct(self, inputs):
        return self.net.rollout(inputs, self.out_frames)[0]

    # -- training ------------------------------------------------------------------------------------------------------
    def sampling_probabilities(self, step):
        """Per mask column, the probability of reading the true frame at global step ``step``."""
        return [scheduled_sampling_eta(step, **self.schedule)] * (self.out_frames - 1)

    def on_train_batch_start(self, batch, batch_idx):
        rows = self.split_batch(batch)[0].shape[0]
        if rows > self.sampling_max_batch:
            raise ValueError(f"{type(self).__name__}(sampling_max_batch={self.sampling_max_batch}): the training "
                             f"batch has {rows} videos; set sampling_max_batch >= the batch size")
        step = self.trainer.global_step
        probabilities = self.sampling_probabilities(step) if self.scheduled_sampling else []
        if probabilities:  # none: no frame is mixed (scheduled sampling off, or a single output frame)
            mask = sampling_mask(self.sampling_seed, step, self.sampling_max_batch, probabilities)
            ops.assign(self.sampling_mask, Tensor(mask))

    def training_masks(self, batch_size):
        """``(input_mask, forecast_mask)`` for :meth:`PredRNNNet.rollout` (None: not mixed)."""
        if not self.scheduled_sampling or self.out_frames < 2:
            return None, None
        return None, self.sampling_mask[:batch_size]

    def training_rollout(self, inputs, targets, increments=False):
        """``(forecast, context_loss, increments)`` of one training forward pass (see the class docstring);
        ``context_loss`` is None without ``context_loss`` or with a single input frame."""
        input_mask, forecast_mask = self.training_masks(inputs.shape[0])
        context = self.context_loss and self.in_frames > 1
        frames, deltas = self.net.rollout(inputs, self.out_frames, targets, forecast_mask, input_mask, context,
                                          increments)
        if not context:
            return frames, None, deltas
        seen = self.in_frames - 1
        context_loss = seen / self.out_frames * self.compute_loss(frames[:, :seen], inputs[:, 1:])
        return frames[:, seen:], context_loss, deltas

    def training_forward(self, inputs, targets):
        frames, context_loss, _ = self.training_rollout(inputs, targets)
        if context_loss is None:
            return frames, {}
        return frames, {"context": context_loss}
