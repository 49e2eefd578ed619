"""TAU: SimVP whose translator blocks use the temporal attention unit, trained with differential divergence
regularisation.

Tan et al., "Temporal Attention Unit: Towards Efficient Spatiotemporal Predictive Learning", CVPR 2023
(arXiv:2206.12126). Written here from the paper's equations. The encoder, decoder and translator layout are SimVP's
(``models/simvp.py``); only the attention unit inside each translator block differs. Over the translator features
``H`` (B, T * hid_S, h, w)::

    SA = Conv1x1(DWD(DW(H)))                                  intra-frame static attention (large kernel, as gSTA)
    DA = sigmoid(FC2(ReLU(FC1(AvgPool(H)))))                  inter-frame dynamic attention: squeeze-and-excitation
                                                              over the stacked frame channels (Hu et al. 2018)
    H' = (SA * DA) * H

The squeeze width is ``max(dim // se_reduction, 4)``. Differential divergence regularisation compares how the
prediction and the target change from frame to frame::

    dY_i = Y_(i+1) - Y_i  (i = 1 .. T'-1),   p = softmax_i(dY_hat / tau),   q = softmax_i(dY / tau)
    L_DDR = KL(p || q),  per pixel and channel, averaged over them and the batch

with the softmax over time as in the paper's equation (OpenSTL's code takes it over the pixels of each difference
frame and averages the terms instead of summing them). The training loss is ``loss + alpha * L_DDR``; ``alpha`` is
0.1 in the paper, ``tau`` (``ddr_temperature``) 0.1.
"""
from models.simvp import LargeKernelConv, SimVP, conv  # first: imports msforge before mindspore

import mindspore as ms
from mindspore import nn, ops

__all__ = ["TemporalAttention", "differential_divergence", "TAU"]


class TemporalAttention(nn.Cell):
    """TAU's attention unit over ``dim`` channels: static large-kernel attention times a squeeze-and-excitation
    channel attention, times the input (see the module docstring)."""

    def __init__(self, dim, kernel_size=21, dilation=3, se_reduction=16):
        super().__init__()
        self.large_kernel = LargeKernelConv(dim, kernel_size, dilation)
        self.static_conv = conv(dim, dim, 1)
        squeezed = max(dim // se_reduction, 4)
        self.squeeze = nn.Dense(dim, squeezed, has_bias=False)
        self.excite = nn.Dense(squeezed, dim, has_bias=False)

    def construct(self, x):
        static = self.static_conv(self.large_kernel(x))
        dynamic = ops.sigmoid(self.excite(ops.relu(self.squeeze(x.mean(axis=(2, 3))))))
        return static * dynamic.reshape(dynamic.shape[0], dynamic.shape[1], 1, 1) * x


def differential_divergence(predictions, targets, temperature=0.1):
    """``KL(softmax_t(dY_hat / tau) || softmax_t(dY / tau))`` of the frame differences of ``predictions`` and
    ``targets`` (N, T, C, H, W), summed over the T-1 differences and averaged over everything else; zero for T < 2."""
    if predictions.shape[1] < 2:
        return ops.zeros((), ms.float32)
    log_p = ops.log_softmax((predictions[:, 1:] - predictions[:, :-1]) / temperature, axis=1)
    log_q = ops.log_softmax((targets[:, 1:] - targets[:, :-1]) / temperature, axis=1)
    return (ops.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()


class TAU(SimVP):
    """TAU as an msforge model: SimVP's arguments (``hid_S``, ``hid_T``, ``N_S``, ``N_T``, ``patch``, ...; see
    :class:`models.simvp.SimVP`) with :class:`TemporalAttention` in the translator, plus ``alpha`` (weight of the
    differential divergence term, logged as ``train_ddr`` already weighted; 0 turns it off) and ``ddr_temperature``
    (the softmax temperature tau)."""

    translator_unit = TemporalAttention

    def __init__(self, alpha=0.1, ddr_temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"TAU(alpha={alpha!r}): expected a number >= 0")
        if isinstance(ddr_temperature, bool) or not isinstance(ddr_temperature, (int, float)) or ddr_temperature <= 0:
            raise ValueError(f"TAU(ddr_temperature={ddr_temperature!r}): expected a number > 0")
        self.alpha, self.ddr_temperature = float(alpha), float(ddr_temperature)

    def training_forward(self, inputs, targets):
        predictions = self.construct(inputs)
        if self.alpha == 0:
            return predictions, {}
        return predictions, {"ddr": self.alpha * differential_divergence(predictions, targets, self.ddr_temperature)}
