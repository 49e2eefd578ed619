"""Layers that replace a MindSpore layer with a faster kernel where MindSpore's own is slow, same parameters.

``GroupNorm``: a drop-in for ``mindspore.nn.GroupNorm`` (same constructor, the same ``gamma`` / ``beta`` Parameters,
so checkpoints move between the two). On CPU it runs a compiled C++ forward and backward (``msforge/kernels/
group_norm.cc`` through ``ops.Custom(func_type="aot")``), timed against MindSpore 2.10's CPU GroupNorm and
GroupNormGrad by ``bench/group_norm.py`` and equal to them within float32 rounding (``tests/test_layers.py``).
Elsewhere (GPU, Ascend), or when the kernel cannot be built (no C++ compiler; ``MSFORGE_KERNELS=0``), it is
``nn.GroupNorm`` itself; a warning names the reason once.
"""
import warnings

import mindspore as ms
from mindspore import Tensor, nn, ops

from msforge import kernels

__all__ = ["GroupNorm", "group_norm_kernel"]

_warned = set()


def group_norm_kernel():
    """Path of the compiled GroupNorm library when this process will use it, else None (after one warning)."""
    if ms.get_context("device_target") != "CPU":
        return None
    path, reason = kernels.library("group_norm")
    if path is None and reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"msforge.layers.GroupNorm uses MindSpore's GroupNorm kernel (slower on CPU): {reason}",
                      stacklevel=3)
    return path


class GroupNorm(nn.GroupNorm):
    """``mindspore.nn.GroupNorm`` with a C++ kernel on CPU (see the module docstring). ``use_kernel=False`` forces
    MindSpore's kernel. The device is read when the layer is built: build the network after choosing the device."""

    def __init__(self, num_groups, num_channels, eps=1e-05, affine=True, gamma_init="ones", beta_init="zeros",
                 dtype=ms.float32, use_kernel=True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, gamma_init=gamma_init,
                         beta_init=beta_init, dtype=dtype)
        path = group_norm_kernel() if use_kernel and dtype == ms.float32 else None
        self.use_kernel = path is not None
        if not self.use_kernel:
            return
        groups = self.num_groups
        backward = ops.Custom(f"{path}:GroupNormBackward", out_shape=lambda dy, x, gamma, mean, rstd: (x, gamma, gamma),
                              out_dtype=lambda dy, x, gamma, mean, rstd: (x, gamma, gamma), func_type="aot")

        def bprop(x, gamma, beta, eps, out, dout):
            dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
            return dx, dgamma, dbeta, ops.zeros_like(eps)

        self.forward_op = ops.Custom(f"{path}:GroupNormForward",
                                     out_shape=lambda x, gamma, beta, eps: (x, (x[0], groups), (x[0], groups)),
                                     out_dtype=lambda x, gamma, beta, eps: (x, x, x), func_type="aot", bprop=bprop)
        self.backward_op = backward  # kept as an attribute so the Cell owns both primitives
        self.eps_tensor = Tensor([self.eps], ms.float32)

    def construct(self, x):
        if self.use_kernel:
            return self.forward_op(x, self.gamma, self.beta, self.eps_tensor)[0]
        return self._cal_output(x)
