"""Layers that replace a MindSpore layer with a faster kernel where MindSpore's own is slow, same parameters.

``Conv2d``: a drop-in for ``mindspore.nn.Conv2d`` (same constructor and Parameters ``weight`` / ``bias``). On CPU,
for float32 NCHW convolutions with symmetric zero padding (``pad_mode`` "pad" with the same padding on both sides of
an axis at least ``stride - 1``, or "same" / "valid" at stride 1), any dilation and groups (the ConvLSTM's gates
convolution, SimVP's and TAU's strided, depthwise and dilated ones), forward and backward run the oneDNN library
MindSpore ships with the layout oneDNN computes fastest in (``msforge/kernels/conv2d.cc``), with the bias add fused;
MindSpore 2.10's own CPU kernels give it plain NCHW and get im2col + sgemm. They run on a private copy of that
library whose instruction set is not capped at AVX2 (MindSpore's own instance must stay capped, see
``msforge/__init__.py``): AVX-512 kernels where the CPU has them. ``MSFORGE_ONEDNN_PRIVATE=0`` uses MindSpore's
instance instead. Timed by ``bench/layers.py``, equal to ``nn.Conv2d`` within float32 rounding
(``tests/test_layers.py``). Any other configuration or device, or no compiler: ``nn.Conv2d`` itself.
:func:`use_bfloat16_convolutions` (what ``Trainer(precision="bf16-mixed")`` does on CPU) makes the kernel multiply
in bfloat16 where the CPU has bfloat16 instructions: inputs, weights and the incoming gradient rounded to bfloat16,
sums, outputs, gradients and the weights themselves float32. Dilated depthwise convolutions at stride 1 (SimVP's and
TAU's translator), which oneDNN runs on im2col + sgemm, skip oneDNN: the kernel computes them on plain NCHW with loops
of its own, in float32, skipping the taps that read only padding (``Conv2d.set_direct_depthwise(False)`` gives them
back to oneDNN; ``bench/depthwise.py``). 3x3 convolutions at stride 1 with padding 1 and channels in multiples of 16
(the ConvLSTM's and ConvGRU's gates) compute their output and gradients by Winograd's F(4x4, 3x3) and F(3x3, 4x4)
on AVX-512 CPUs, in float32, bfloat16 or not (``msforge/kernels/winograd.h``: 4x fewer multiplications;
``Conv2d.set_winograd(False)`` gives them back to oneDNN's direct kernels; ``bench/winograd.py``).

``GroupNorm``: a drop-in for ``mindspore.nn.GroupNorm`` (same constructor, the same ``gamma`` / ``beta`` Parameters,
so checkpoints move between the two). On CPU it runs a compiled C++ forward and backward (``msforge/kernels/
group_norm.cc`` through ``ops.Custom(func_type="aot")``), timed against MindSpore 2.10's CPU GroupNorm and
GroupNormGrad by ``bench/layers.py`` and equal to them within float32 rounding (``tests/test_layers.py``).
Elsewhere (GPU, Ascend), or when the kernel cannot be built (no C++ compiler; ``MSFORGE_KERNELS=0``), it is
``nn.GroupNorm`` itself; a warning names the reason once.

``LSTMGates``: the LSTM cell's pointwise part, ``(gates, c) -> (h', c')`` with ``i, f, o = sigmoid``, ``g = tanh``
of the four gate blocks stacked on axis 1 in (i, f, g, o) order, ``c' = f*c + i*g``, ``h' = o*tanh(c')``. No
Parameters. On CPU, float32, one compiled pass forward and one backward (``msforge/kernels/lstm_gates.cc``) instead
of ~30 MindSpore elementwise kernels; elsewhere the same formula in MindSpore ops. tanh is ``2*sigmoid(2x) - 1`` on
both paths (MindSpore 2.10's CPU Tanh is off by up to 1e-4).

``GroupNormLSTMGates``: a GroupNorm of the gates, then LSTMGates: ``(gates, c, gamma, beta) -> (h', c')`` with the
GroupNorm's Parameters passed in (the model keeps them in its ``GroupNorm`` layer, whose names checkpoints know). On
CPU, float32, one compiled pass each way (``lstm_gates.cc``) where the two layers took two: the normalised gates and
their gradient are never written out. Elsewhere ``ops.group_norm`` then ``LSTMGates``.

``GELU``, ``SiLU``, ``GLU``: drop-ins for ``mindspore.nn.GELU``, ``nn.SiLU`` and ``nn.GLU`` (same constructors, no
Parameters). On CPU, float32, exact GELU (``approximate=False``), SiLU, and GLU over axis 1 run one compiled pass
forward and one backward each (``msforge/kernels/activations.cc``) instead of MindSpore's several elementwise kernels
(exact GELU's Erf is within 1.5e-7 of the true Phi there); elsewhere, for other dtypes, GELU's tanh form or GLU over
another axis, MindSpore's ops.

The kernels spread their work over the CPUs the process may run on, or over ``MSFORGE_NUM_THREADS`` threads.
"""
import ctypes
import warnings

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from msforge import kernels

__all__ = ["Conv2d", "GroupNorm", "LSTMGates", "GroupNormLSTMGates", "GELU", "SiLU", "GLU", "tanh", "conv2d_kernel",
           "group_norm_kernel", "lstm_gates_kernel", "activations_kernel",
           "bfloat16_convolutions", "bfloat16_convolutions_missing", "kernel_convolutions",
           "use_bfloat16_convolutions"]

_warned = set()
_onednn_versions = {}  # library path -> oneDNN version it runs with (major * 10000 + minor * 100 + patch)
_bf16_kernels = {}  # library path -> whether oneDNN gives a bfloat16 convolution a kernel of its own here


def _warn_once(message, stacklevel=4):  # 4: the line that built the layer, through *_kernel() and __init__
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=stacklevel)


def _cpu_kernel(name, fallback):
    """Path of kernel library ``name`` when this process will use it, else None; on CPU, a warning once that the
    layer uses ``fallback`` and why."""
    if ms.get_context("device_target") != "CPU":
        return None
    path, reason = kernels.library(name)
    if path is None:
        _warn_once(f"{fallback} (slower on CPU): {reason}", stacklevel=5)
    return path


def group_norm_kernel():
    """Path of the compiled GroupNorm library when this process will use it, else None (after one warning)."""
    return _cpu_kernel("group_norm", "msforge.layers.GroupNorm uses MindSpore's GroupNorm kernel")


def lstm_gates_kernel():
    """Path of the compiled LSTM gates library when this process will use it, else None (after one warning)."""
    return _cpu_kernel("lstm_gates", "msforge.layers.LSTMGates uses MindSpore's elementwise ops")


def activations_kernel():
    """Path of the compiled activations library (GELU, SiLU, GLU) when this process will use it, else None (after one
    warning)."""
    return _cpu_kernel("activations", "msforge.layers' GELU, SiLU and GLU use MindSpore's elementwise ops")


def conv2d_kernel():
    """Path of the compiled oneDNN convolution library when this process will use it, else None (after one
    warning). The library's oneDNN must be 3.x: the C API declarations in conv2d.cc are 3.x's."""
    if ms.get_context("device_target") != "CPU":
        return None
    path, reason = kernels.library("conv2d")
    if path is not None:
        if path not in _onednn_versions:
            _onednn_versions[path] = ctypes.CDLL(path).MsforgeOneDnnVersion()
        version = _onednn_versions[path]
        if version // 10000 != 3:
            path, reason = None, f"MindSpore's oneDNN reports version code {version}; conv2d.cc is written for 3.x"
    if path is None:
        _warn_once(f"msforge.layers.Conv2d uses MindSpore's Conv2D kernels (slower on CPU): {reason}")
    return path


def _cpu_flags():
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


def bfloat16_convolutions_missing():
    """Why :class:`Conv2d` cannot multiply in bfloat16 here, as one phrase, or None when it can: it needs its kernel in
    use, a CPU with bfloat16 instructions (AVX512_BF16 or AMX; elsewhere oneDNN would emulate them, slower than
    float32) and a oneDNN kernel other than its reference one for a bfloat16 convolution."""
    path = conv2d_kernel()
    if path is None:
        return "msforge's convolution kernel is not in use"
    if not _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "this CPU has no bfloat16 instructions (AVX512_BF16 or AMX)"
    if path not in _bf16_kernels:
        impl = ctypes.CDLL(path).MsforgeConvImpl
        impl.restype, impl.argtypes = ctypes.c_char_p, [ctypes.c_int64] * 8
        _bf16_kernels[path] = impl(16, 16, 8, 8, 16, 3, 1, 1).decode().endswith(" bf16")
    return None if _bf16_kernels[path] else "oneDNN has only its reference kernel for bfloat16 convolutions here"


def bfloat16_convolutions():
    """Whether :class:`Conv2d` can multiply in bfloat16 here (:func:`bfloat16_convolutions_missing` says why not)."""
    return bfloat16_convolutions_missing() is None


def kernel_convolutions(cell):
    """The :class:`Conv2d` cells in ``cell`` that run msforge's kernel."""
    return [c for _, c in cell.cells_and_names() if isinstance(c, Conv2d) and c.use_kernel]


def use_bfloat16_convolutions(cell):
    """Make every :class:`Conv2d` in ``cell`` that runs msforge's kernel multiply in bfloat16 (Winograd's shapes keep
    float32: :meth:`Conv2d.set_bfloat16`); returns how many, 0 when :func:`bfloat16_convolutions` says no. Call it
    before the first call of the network: the setting is a constant of each compiled graph, so graphs compiled before
    keep float32."""
    convs = kernel_convolutions(cell)
    if not convs or not bfloat16_convolutions():
        return 0
    for conv in convs:
        conv.set_bfloat16(True)
    return len(convs)


def _kernel_padding(conv):
    """(pad_h, pad_w) of an ``nn.Conv2d`` the oneDNN kernel computes exactly as MindSpore does, or None: the same
    padding on both sides of each axis ("same" and "valid" only at stride 1, where that holds for every input size),
    and at least ``stride - 1`` (then the bottom/right padding the output size leaves is never negative)."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if conv.pad_mode in ("same", "valid"):
        if (sh, sw) != (1, 1):
            return None
        if conv.pad_mode == "valid":
            return 0, 0
        reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)
        return (reach_h // 2, reach_w // 2) if reach_h % 2 == 0 and reach_w % 2 == 0 else None
    p = conv.padding
    top, bottom, left, right = (p, p, p, p) if isinstance(p, int) else p
    if top != bottom or left != right or top < sh - 1 or left < sw - 1:
        return None
    return top, left


class Conv2d(nn.Conv2d):
    """``mindspore.nn.Conv2d`` with oneDNN's blocked-layout kernels on CPU (see the module docstring) where the
    configuration allows; ``use_kernel=False`` forces MindSpore's. The device is read when the layer is built."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad_mode="same", padding=0, dilation=1,
                 group=1, has_bias=False, weight_init=None, bias_init=None, data_format="NCHW", dtype=ms.float32,
                 use_kernel=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, pad_mode=pad_mode, padding=padding,
                         dilation=dilation, group=group, has_bias=has_bias, weight_init=weight_init,
                         bias_init=bias_init, data_format=data_format, dtype=dtype)
        pads = _kernel_padding(self)
        supported = pads is not None and self.data_format == "NCHW" and dtype == ms.float32
        path = conv2d_kernel() if use_kernel and supported else None
        self.use_kernel = path is not None
        if not self.use_kernel:
            return
        (ph, pw), (kh, kw), (sh, sw), (dh, dw) = pads, self.kernel_size, self.stride, self.dilation
        # the geometry, an input of both kernels (their shapes cannot tell a stride or a dilation); its last value
        # holds flags: the multiplications read bfloat16 (set_bfloat16), a depthwise convolution runs on oneDNN
        # (set_direct_depthwise), a 3x3 one runs on oneDNN rather than Winograd's algorithm (set_winograd)
        self._geometry = (sh, sw, dh, dw, ph, pw, self.group)
        self.bfloat16 = False
        self.direct_depthwise = True
        self.winograd = True
        self.geometry = Tensor(np.array([*self._geometry, 0], np.int64))
        backward = ops.Custom(f"{path}:Conv2dBackward", out_shape=lambda dy, x, w, g: (x, w, (w[0],)),
                              out_dtype=lambda dy, x, w, g: (x, w, w), func_type="aot")

        def bprop(x, weight, bias, geometry, out, dout):
            dx, dweight, dbias = backward(dout, x, weight, geometry)
            return dx, dweight, dbias, ops.zeros_like(geometry)

        def out_shape(x, w, b, g):  # MindSpore's output size for this padding
            return (x[0], w[0], (x[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                    (x[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

        self.forward_op = ops.Custom(f"{path}:Conv2dForward", out_shape=out_shape, out_dtype=lambda x, w, b, g: x,
                                     func_type="aot", bprop=bprop)
        # PyNative caches an op's inferred output shape by its name, attributes and input shapes; out_shape reads
        # stride, dilation and padding from its closure, so they are attributes too, or two convolutions differing
        # only in stride would share one output shape (and the kernel would refuse the mismatch)
        self.forward_op.add_prim_attr("msforge_geometry", f"{sh},{sw},{dh},{dw},{ph},{pw}")
        self.backward_op = backward  # kept as an attribute so the Cell owns both primitives
        # The kernel always adds a bias; without one it adds zeros (and its gradient is dropped).
        self.zero_bias = None if has_bias else Tensor(np.zeros(out_channels, np.float32))

    def set_bfloat16(self, enabled=True):
        """Multiply in bfloat16 (x, the weights and the incoming gradient rounded; sums, outputs and gradients
        float32) or in float32, in graphs compiled after the call (it is a constant of a compiled graph).
        :func:`use_bfloat16_convolutions` also checks that the CPU has bfloat16 instructions. A :attr:`winograd_shape`
        layer computed by Winograd's algorithm stays float32 whatever this says (on this project's AVX-512 CPU it is
        as fast as oneDNN's bfloat16 kernel there, and exact to float32: ``bench/bf16_step.py``);
        ``set_winograd(False)`` gives it the bfloat16 kernel."""
        if not self.use_kernel:
            raise ValueError("Conv2d.set_bfloat16: this layer runs MindSpore's Conv2D (no msforge kernel here)")
        self.bfloat16 = bool(enabled)
        self._set_flags()

    @property
    def dilated_depthwise(self):
        """Depthwise (groups = input channels = output channels), dilated, at stride 1: what the kernel's own loops
        compute."""
        return (self.group == self.in_channels == self.out_channels and tuple(self.stride) == (1, 1)
                and tuple(self.dilation) != (1, 1))

    def set_direct_depthwise(self, enabled=True):
        """Run a :attr:`dilated_depthwise` convolution on the kernel's own loops (the default: float32, skipping taps
        that read only padding) or, ``enabled=False``, on oneDNN, in graphs compiled after the call; benches compare the
        two. Other convolutions always run on oneDNN."""
        if not self.use_kernel:
            raise ValueError("Conv2d.set_direct_depthwise: this layer runs MindSpore's Conv2D (no msforge kernel here)")
        self.direct_depthwise = bool(enabled)
        self._set_flags()

    @property
    def winograd_shape(self):
        """A 3x3 convolution at stride 1 with padding 1, no dilation or groups, channels multiples of 16: the kernel
        computes its output and gradients by Winograd's algorithm in float32 on AVX-512 CPUs."""
        return (tuple(self.kernel_size) == (3, 3) and tuple(self.stride) == (1, 1) and tuple(self.dilation) == (1, 1)
                and self.group == 1 and self._geometry[4:6] == (1, 1) and self.in_channels % 16 == 0
                and self.out_channels % 16 == 0)

    def set_winograd(self, enabled=True):
        """Compute a :attr:`winograd_shape` convolution's output and gradients by Winograd's algorithm (the default;
        float32 only, 4x fewer multiplications, results within 2e-5 of their scale of the direct kernel's) or,
        ``enabled=False``, on oneDNN's direct kernels, in graphs compiled after the call; benches compare the two."""
        if not self.use_kernel:
            raise ValueError("Conv2d.set_winograd: this layer runs MindSpore's Conv2D (no msforge kernel here)")
        self.winograd = bool(enabled)
        self._set_flags()

    def _set_flags(self):
        flags = int(self.bfloat16) + 2 * int(not self.direct_depthwise) + 4 * int(not self.winograd)
        self.geometry = Tensor(np.array([*self._geometry, flags], np.int64))

    def construct(self, x):
        # float16 / bfloat16 inputs (mixed precision casts them) take MindSpore's kernels; the dtype is a constant of
        # the compiled graph
        if self.use_kernel and x.dtype == ms.float32 and self.weight.dtype == ms.float32:
            return self.forward_op(x, self.weight, self.bias if self.has_bias else self.zero_bias, self.geometry)
        return super().construct(x)


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
        self.forward_op.add_prim_attr("msforge_groups", groups)  # read by out_shape: see Conv2d's msforge_geometry
        self.backward_op = backward  # kept as an attribute so the Cell owns both primitives
        self.eps_tensor = Tensor([self.eps], ms.float32)

    def construct(self, x):
        if self.use_kernel and x.dtype == ms.float32 and self.gamma.dtype == ms.float32:  # else mixed precision
            return self.forward_op(x, self.gamma, self.beta, self.eps_tensor)[0]
        return self._cal_output(x)


def tanh(x):
    """``tanh(x)`` as ``2*sigmoid(2x) - 1``: MindSpore 2.10's CPU Tanh kernel is off by up to 1e-4 for |x| in 4..6
    (an approximation), its Sigmoid by < 1e-6; this form is within 2e-6 everywhere, for two cheap elementwise ops."""
    return 2.0 * ops.sigmoid(2.0 * x) - 1.0


class LSTMGates(nn.Cell):
    """The LSTM state update from pre-activation gates (see the module docstring): ``construct(gates, c) -> (h, c)``
    with ``gates`` (N, 4H, ...) in (i, f, g, o) order on axis 1 and ``c`` (N, H, ...). ``use_kernel=False`` forces
    MindSpore's ops. The device is read when the layer is built."""

    def __init__(self, use_kernel=True):
        super().__init__()
        self.split = ops.Split(axis=1, output_num=4)
        path = lstm_gates_kernel() if use_kernel else None
        self.use_kernel = path is not None
        if not self.use_kernel:
            return
        backward = ops.Custom(f"{path}:LstmGatesBackward", out_shape=lambda dh, dc, gates, c: (gates, c),
                              out_dtype=lambda dh, dc, gates, c: (gates, c), func_type="aot")

        def bprop(gates, c, out, dout):
            return backward(dout[0], dout[1], gates, c)

        def out_shape(gates, c):
            gates, c = list(gates), list(c)
            if len(gates) < 2 or gates[:1] + gates[2:] != c[:1] + c[2:] or gates[1] != 4 * c[1]:
                raise ValueError(f"LSTMGates: gates of shape {tuple(gates)} must be (N, 4H, ...) for c of shape "
                                 f"{tuple(c)} (N, H, ...)")
            return c, c

        self.forward_op = ops.Custom(f"{path}:LstmGatesForward", out_shape=out_shape,
                                     out_dtype=lambda gates, c: (c, c), func_type="aot", bprop=bprop)
        self.backward_op = backward  # kept as an attribute so the Cell owns both primitives

    def construct(self, gates, c):
        if self.use_kernel and gates.dtype == ms.float32 and c.dtype == ms.float32:  # else mixed precision
            return self.forward_op(gates, c)
        i, f, g, o = self.split(gates)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * tanh(g)
        return ops.sigmoid(o) * tanh(c), c


class GroupNormLSTMGates(nn.Cell):
    """``LSTMGates()(GroupNorm(gates), c)`` in one kernel each way on CPU (see the module docstring):
    ``construct(gates, c, gamma, beta) -> (h, c)``, ``gamma`` and ``beta`` the GroupNorm's (``num_groups`` groups over
    the gates' 4H channels, ``eps``). No Parameters. ``use_kernel=False`` forces MindSpore's ops."""

    def __init__(self, num_groups, eps=1e-05, use_kernel=True):
        super().__init__()
        self.num_groups, self.eps = int(num_groups), float(eps)
        self.gates = LSTMGates(use_kernel=use_kernel)  # the update where the fused kernel does not run
        path = lstm_gates_kernel() if use_kernel else None
        self.use_kernel = path is not None
        if not self.use_kernel:
            return
        groups = self.num_groups
        backward = ops.Custom(f"{path}:GroupNormLstmGatesBackward",
                              out_shape=lambda dh, dc, gates, c, gamma, beta, mean, rstd: (gates, gamma, gamma, c),
                              out_dtype=lambda dh, dc, gates, c, gamma, beta, mean, rstd: (gates, gamma, gamma, c),
                              func_type="aot")

        def bprop(gates, c, gamma, beta, eps, out, dout):
            dgates, dgamma, dbeta, dc = backward(dout[0], dout[1], gates, c, gamma, beta, out[2], out[3])
            return dgates, dc, dgamma, dbeta, ops.zeros_like(eps)

        def out_shape(gates, c, gamma, beta, eps):
            gates, c = list(gates), list(c)
            if len(gates) < 2 or gates[:1] + gates[2:] != c[:1] + c[2:] or gates[1] != 4 * c[1] or gates[1] % groups:
                raise ValueError(f"GroupNormLSTMGates: gates of shape {tuple(gates)} must be (N, 4H, ...) for c of "
                                 f"shape {tuple(c)} (N, H, ...), 4H divisible by num_groups={groups}")
            return c, c, (gates[0], groups), (gates[0], groups)

        self.forward_op = ops.Custom(f"{path}:GroupNormLstmGatesForward", out_shape=out_shape,
                                     out_dtype=lambda gates, c, gamma, beta, eps: (c, c, c, c), func_type="aot",
                                     bprop=bprop)
        self.forward_op.add_prim_attr("msforge_groups", groups)  # read by out_shape: see Conv2d's msforge_geometry
        self.backward_op = backward  # kept as an attribute so the Cell owns both primitives
        self.eps_tensor = Tensor([self.eps], ms.float32)

    def construct(self, gates, c, gamma, beta):
        if (self.use_kernel and gates.dtype == ms.float32 and c.dtype == ms.float32 and gamma.dtype == ms.float32
                and beta.dtype == ms.float32):  # else mixed precision
            h, c_next, _, _ = self.forward_op(gates, c, gamma, beta, self.eps_tensor)
            return h, c_next
        return self.gates(ops.group_norm(gates, self.num_groups, gamma, beta, self.eps), c)


def _activation_ops(path, name, out_shape=lambda x: x):
    """The forward and backward primitives of activation ``name`` in the compiled library: ``<name>Forward(x) -> y``
    with its gradient from ``<name>Backward(dy, x) -> dx``."""
    backward = ops.Custom(f"{path}:{name}Backward", out_shape=lambda dy, x: x, out_dtype=lambda dy, x: x,
                          func_type="aot")

    def bprop(x, out, dout):
        return (backward(dout, x),)

    forward = ops.Custom(f"{path}:{name}Forward", out_shape=out_shape, out_dtype=lambda x: x, func_type="aot",
                         bprop=bprop)
    return forward, backward


class GELU(nn.Cell):
    """``mindspore.nn.GELU``: ``x * Phi(x)`` (``approximate=False``) or its tanh form (``approximate=True``, MindSpore's
    default). The exact form runs the compiled kernel on CPU (see the module docstring)."""

    def __init__(self, approximate=True, use_kernel=True):
        super().__init__()
        self.approximate = bool(approximate)
        path = activations_kernel() if use_kernel and not self.approximate else None
        self.use_kernel = path is not None
        if self.use_kernel:
            self.forward_op, self.backward_op = _activation_ops(path, "Gelu")

    def construct(self, x):
        if self.use_kernel and x.dtype == ms.float32:  # else mixed precision
            return self.forward_op(x)
        return ops.gelu(x, approximate="tanh" if self.approximate else "none")


class SiLU(nn.Cell):
    """``mindspore.nn.SiLU``: ``x * sigmoid(x)``, on the compiled kernel on CPU (see the module docstring)."""

    def __init__(self, use_kernel=True):
        super().__init__()
        path = activations_kernel() if use_kernel else None
        self.use_kernel = path is not None
        if self.use_kernel:
            self.forward_op, self.backward_op = _activation_ops(path, "Silu")

    def construct(self, x):
        if self.use_kernel and x.dtype == ms.float32:
            return self.forward_op(x)
        return ops.silu(x)


class GLU(nn.Cell):
    """``mindspore.nn.GLU``: ``x`` split in two halves ``a, b`` along ``axis``, ``a * sigmoid(b)``. Over ``axis=1``
    (channels of NCHW) it runs the compiled kernel on CPU (see the module docstring)."""

    def __init__(self, axis=-1, use_kernel=True):
        super().__init__()
        self.axis = axis
        path = activations_kernel() if use_kernel and axis == 1 else None
        self.use_kernel = path is not None
        if self.use_kernel:
            def out_shape(x):
                if len(x) < 2 or x[1] % 2:
                    raise ValueError(f"GLU: input of shape {tuple(x)} needs an even size on axis 1 to split in two")
                return [x[0], x[1] // 2, *x[2:]]

            self.forward_op, self.backward_op = _activation_ops(path, "Glu", out_shape)

    def construct(self, x):
        if self.use_kernel and x.dtype == ms.float32:
            return self.forward_op(x)
        half = x.shape[self.axis] // 2
        return ops.narrow(x, self.axis, 0, half) * ops.sigmoid(ops.narrow(x, self.axis, half, half))
