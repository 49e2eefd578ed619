"""PredRNN-v2: PredRNN with the memory decoupling loss and reverse scheduled sampling.

Wang, Wu, Zhang, Gao, Wang, Yu, Long, "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning",
IEEE TPAMI 2022 (arXiv:2103.09504). The network is PredRNN's (``models/predrnn.py``: the same ST-LSTM cell and
zigzag memory); v2 changes the training:

* Memory decoupling: the increments of the two memories at each step and layer, ``dC = i o g`` and
  ``dM = i' o g'``, pass through one 1x1 convolution shared by all layers (the "adapter", no bias); the loss is the
  mean, over steps, layers, videos and channels, of ``|cos(W * dC, W * dM)|``, the cosine taken over the pixels of
  a channel (:func:`decoupling_loss`). It pushes the two memories to learn different things. Weight
  ``decouple_beta`` (0.1, as the paper's code), logged as ``train_decouple``.
* Reverse scheduled sampling: while reading the inputs, the network is also fed its own prediction instead of input
  frame t (t = 2..in_frames) with probability ``1 - eps_k``, ``eps_k`` rising from 0.5 to 1 over training, so the
  encoder learns long-term dynamics instead of copying the next input; meanwhile the forecast frames read the true
  frame with probability falling from 0.5 to 0 (:func:`reverse_sampling_eta`). Both are coin flips drawn on the host
  from (seed, global step) into one mask Parameter, as PredRNN's.

The predictions made while reading the inputs are trained (``context_loss=True``, PredRNN's option): with reverse
scheduled sampling they are fed back, so they must be predictions.
"""
from msforge.layers import Conv2d  # first: msforge caps oneDNN's ISA before mindspore loads

import math

from mindspore import ops

from models.predrnn import PredRNN, mask_parameter, scheduled_sampling_eta

__all__ = ["PredRNNv2", "decoupling_loss", "reverse_sampling_eta", "REVERSE_SCHEDULES"]

REVERSE_SCHEDULES = ("exponential", "sigmoid", "linear")


def reverse_sampling_eta(step, start_iter=25000, stop_iter=50000, alpha=5000.0, kind="exponential"):
    """``(input_eta, forecast_eta)`` at 0-based global step ``step``: the probabilities that an input frame (2 ..
    in_frames), and a forecast step, read the true frame.

    Both are 0.5 before ``start_iter`` and reach 1 and 0 at ``stop_iter``. In between, with ``k = step - start_iter``
    and ``K = stop_iter - start_iter``, the forecast one falls linearly, ``0.5 - 0.5 k / K``, and the input one rises
    (the paper's increasing schedules, from 0.5 to 1):

    * "exponential": ``1 - 0.5 exp(-k / alpha)`` (the paper's default);
    * "sigmoid": ``0.5 + 0.5 / (1 + exp((K / 2 - k) / alpha))``, centred in the window;
    * "linear": ``0.5 + 0.5 k / K``.
    """
    if step < start_iter:
        return 0.5, 0.5
    if step >= stop_iter:
        return 1.0, 0.0
    k, span = step - start_iter, stop_iter - start_iter
    if kind == "exponential":
        rising = 1.0 - 0.5 * math.exp(-k / alpha)
    elif kind == "sigmoid":
        rising = 0.5 + 0.5 / (1.0 + math.exp((span / 2 - k) / alpha))
    elif kind == "linear":
        rising = 0.5 + 0.5 * k / span
    else:
        raise ValueError(f"reverse schedule kind={kind!r}: expected one of {REVERSE_SCHEDULES}")
    return rising, 0.5 - 0.5 * k / span


def decoupling_loss(delta_c, delta_m, eps=1e-8):
    """Mean over videos and channels of ``|cos|`` between ``delta_c[n, ch]`` and ``delta_m[n, ch]``, each flattened
    over the pixels: ``|<a, b>| / sqrt(max(|a|^2 |b|^2, eps^2))`` (0 where either is 0). Inputs (N, C, H, W)."""
    n, channels = delta_c.shape[0], delta_c.shape[1]
    a, b = delta_c.reshape(n, channels, -1), delta_m.reshape(n, channels, -1)
    dot = (a * b).sum(-1)
    norms = ops.sqrt(ops.maximum((a * a).sum(-1) * (b * b).sum(-1), eps * eps))
    return ops.mean(ops.abs(dot / norms))


class PredRNNv2(PredRNN):
    """PredRNN-v2 (Wang et al., TPAMI 2022) as an msforge video-prediction model: :class:`models.predrnn.PredRNN`'s
    network and arguments, plus

    ``decouple_beta``: weight of the decoupling loss (0 turns it off, and the adapter is not built).
    ``reverse_scheduled_sampling``: True (default) for the schedule of :func:`reverse_sampling_eta` with
    ``reverse_schedule`` ("exponential", "sigmoid", "linear"), ``r_sampling_start_iter``, ``r_sampling_stop_iter``
    and ``r_exp_alpha`` (its steps scale); False for PredRNN's scheduled sampling (the ``sampling_*`` arguments).
    """

    def __init__(self, decouple_beta=0.1, reverse_scheduled_sampling=True, reverse_schedule="exponential",
                 r_sampling_start_iter=25000, r_sampling_stop_iter=50000, r_exp_alpha=5000.0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        if reverse_schedule not in REVERSE_SCHEDULES:
            raise ValueError(f"{name}(reverse_schedule={reverse_schedule!r}): expected one of {REVERSE_SCHEDULES}")
        if not (isinstance(r_sampling_start_iter, int) and isinstance(r_sampling_stop_iter, int)
                and 0 <= r_sampling_start_iter < r_sampling_stop_iter):
            raise ValueError(f"{name}(r_sampling_start_iter={r_sampling_start_iter!r}, r_sampling_stop_iter="
                             f"{r_sampling_stop_iter!r}): need ints with 0 <= start < stop")
        if not r_exp_alpha > 0:
            raise ValueError(f"{name}(r_exp_alpha={r_exp_alpha!r}): must be > 0")
        if not decouple_beta >= 0:
            raise ValueError(f"{name}(decouple_beta={decouple_beta!r}): must be >= 0")
        self.decouple_beta = float(decouple_beta)
        self.reverse = bool(reverse_scheduled_sampling)
        self.reverse_schedule = dict(start_iter=r_sampling_start_iter, stop_iter=r_sampling_stop_iter,
                                     alpha=float(r_exp_alpha), kind=reverse_schedule)
        hidden = self.net.hidden
        self.adapter = Conv2d(hidden, hidden, 1, has_bias=False) if self.decouple_beta > 0 else None
        if self.reverse:  # columns: input frames 2..in_frames, then forecast steps 2..out_frames
            self.sampling_mask = mask_parameter(self.sampling_max_batch, self.in_frames + self.out_frames - 2)

    def sampling_probabilities(self, step):
        if not self.reverse:
            return super().sampling_probabilities(step)
        input_eta, forecast_eta = reverse_sampling_eta(step, **self.reverse_schedule)
        return [input_eta] * (self.in_frames - 1) + [forecast_eta] * (self.out_frames - 1)

    def training_masks(self, batch_size):
        if not self.reverse:
            return super().training_masks(batch_size)
        if not self.scheduled_sampling:
            return None, None
        mask = self.sampling_mask[:batch_size]
        seen = self.in_frames - 1
        input_mask = mask[:, :seen] if seen > 0 else None
        forecast_mask = mask[:, seen:] if self.out_frames > 1 else None
        return input_mask, forecast_mask

    def training_forward(self, inputs, targets):
        if self.adapter is None:
            return super().training_forward(inputs, targets)
        frames, context_loss, (deltas_c, deltas_m) = self.training_rollout(inputs, targets, True)
        # one adapter call over every step and layer: (steps * layers * N, hidden, h, w)
        adapted_c, adapted_m = self.adapter(ops.concat(deltas_c, 0)), self.adapter(ops.concat(deltas_m, 0))
        decouple = self.decouple_beta * decoupling_loss(adapted_c, adapted_m)
        if context_loss is None:  # graph mode: a dict built whole, not grown item by item
            return frames, {"decouple": decouple}
        return frames, {"context": context_loss, "decouple": decouple}
