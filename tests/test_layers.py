"""msforge.layers.GroupNorm, Conv2d, LSTMGates, GELU, SiLU and GLU: the compiled CPU kernels against MindSpore's
nn.GroupNorm, nn.Conv2d, the LSTM formula in MindSpore ops and nn.GELU / nn.SiLU / nn.GLU (forward and gradients, graph
mode), their checkpoint compatibility, mixed precision, and the fallbacks when a kernel cannot be built or does not
apply."""
import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile

import msforge  # noqa: F401  (before mindspore)
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from msforge import layers
from msforge.layers import GELU, GLU, Conv2d, GroupNorm, GroupNormLSTMGates, LSTMGates, SiLU, conv2d_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_compiler = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                    reason="no C++ compiler: the layers fall back to MindSpore's kernels")


class WeightedSum(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x, w):
        return (self.layer(x) * w).sum()


def forward_and_grads(layer, x, w):
    """``layer(x)``, then d/dx and d/dParameter (in ``trainable_params`` order) of ``sum(layer(x) * w)``."""
    net = WeightedSum(layer)
    grad_fn = ms.value_and_grad(net, grad_position=0, weights=net.trainable_params())
    _, (dx, dparams) = grad_fn(Tensor(x), Tensor(w))
    return (layer(Tensor(x)).asnumpy(), dx.asnumpy(), *(g.asnumpy() for g in dparams))


def assert_close(got, want, names):
    for name, a, b in zip(names, got, want):
        scale = max(1.0, float(np.abs(b).max()))
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= 2e-6 * scale * max(1, np.sqrt(b.size / 1000)), name


@needs_compiler
@pytest.mark.parametrize("shape,groups", [((16, 128, 16, 16), 4), ((3, 6, 5, 7), 3), ((2, 8, 4, 4), 1),
                                          ((2, 8, 4, 4), 8), ((4, 12, 10), 2)])
def test_kernel_matches_mindspore_groupnorm_forward_and_gradients(shape, groups):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(sum(shape) + groups)
    x = (rng.normal(size=shape) * 3 + 1.5).astype(np.float32)
    w = rng.normal(size=shape).astype(np.float32)
    gamma, beta = rng.normal(size=shape[1]).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32)
    fast, reference = GroupNorm(groups, shape[1]), nn.GroupNorm(groups, shape[1])
    assert fast.use_kernel
    for norm in (fast, reference):
        norm.gamma.set_data(Tensor(gamma))
        norm.beta.set_data(Tensor(beta))
    if len(shape) == 3:  # nn.GroupNorm takes (N, C, H, W) only: compare on the same data with W = 1
        got = forward_and_grads(fast, x, w)
        want = forward_and_grads(reference, x[..., None], w[..., None])
        want = (want[0][..., 0], want[1][..., 0], want[2], want[3])
    else:
        got, want = forward_and_grads(fast, x, w), forward_and_grads(reference, x, w)
    assert_close(got, want, ("y", "dx", "dgamma", "dbeta"))


# (input shape, out channels, constructor keywords): the ConvLSTM's gates convs (3x3 and 5x5, "pad" k // 2), its
# 1x1 output conv, pad_mode "same" / "valid", a non-square kernel with per-axis padding, no bias, batch 1; SimVP's
# and TAU's stride-2 encoder convs (even and odd input sizes), depthwise 5x5 and dilated 7x7 (dilation 3) convs, a
# depthwise 3x3, grouped convs, a dilated "same" conv
CONV_CASES = [((16, 48, 16, 16), 128, dict(kernel_size=3, pad_mode="pad", padding=1, has_bias=True)),
              ((2, 40, 16, 16), 64, dict(kernel_size=5, pad_mode="pad", padding=2, has_bias=True)),
              ((3, 32, 16, 16), 16, dict(kernel_size=1, pad_mode="pad", padding=0, has_bias=True)),
              ((2, 5, 7, 9), 6, dict(kernel_size=3, pad_mode="same", has_bias=True)),
              ((2, 5, 7, 9), 6, dict(kernel_size=(3, 5), pad_mode="valid", has_bias=True)),
              ((2, 5, 7, 9), 3, dict(kernel_size=(3, 5), pad_mode="pad", padding=(1, 1, 2, 2))),
              ((1, 3, 6, 6), 7, dict(kernel_size=3, pad_mode="pad", padding=1)),
              ((4, 16, 32, 32), 16, dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, has_bias=True)),
              ((2, 6, 9, 11), 8, dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, has_bias=True)),
              ((2, 4, 13, 13), 6, dict(kernel_size=5, stride=3, pad_mode="pad", padding=2)),
              ((2, 32, 16, 16), 32, dict(kernel_size=5, pad_mode="pad", padding=2, group=32, has_bias=True)),
              ((2, 32, 16, 16), 32, dict(kernel_size=7, dilation=3, pad_mode="pad", padding=9, group=32,
                                         has_bias=True)),
              ((2, 64, 8, 8), 64, dict(kernel_size=3, pad_mode="pad", padding=1, group=64, has_bias=True)),
              ((2, 8, 10, 10), 12, dict(kernel_size=3, pad_mode="pad", padding=1, group=4, has_bias=True)),
              ((2, 5, 9, 9), 6, dict(kernel_size=3, dilation=2, pad_mode="same", has_bias=True))]
# dilated depthwise at stride 1 (msforge's own loops, not oneDNN): SimVP's 7x7 dilated by 3 on its 8x8 translator
# maps, where the outer taps read only padding; a non-square "same" one without bias; "valid"; per-axis padding
DEPTHWISE_CASES = [((2, 16, 8, 8), 16, dict(kernel_size=7, dilation=3, pad_mode="pad", padding=9, group=16,
                                            has_bias=True)),
                   ((2, 6, 5, 9), 6, dict(kernel_size=(3, 5), dilation=(2, 1), pad_mode="same", group=6)),
                   ((2, 4, 7, 9), 4, dict(kernel_size=3, dilation=2, pad_mode="valid", group=4, has_bias=True)),
                   ((1, 3, 6, 7), 3, dict(kernel_size=(3, 5), dilation=(1, 2), pad_mode="pad", padding=(1, 1, 2, 2),
                                          group=3, has_bias=True))]
CONV_CASES += DEPTHWISE_CASES


def conv_pair(in_channels, out_channels, **kwargs):
    """An msforge Conv2d and an nn.Conv2d with the same configuration and Parameter values."""
    fast, reference = Conv2d(in_channels, out_channels, **kwargs), nn.Conv2d(in_channels, out_channels, **kwargs)
    ms.load_param_into_net(fast, {p.name: p for p in reference.get_parameters()})
    return fast, reference


@needs_compiler
@pytest.mark.parametrize("shape,out_channels,kwargs", CONV_CASES)
def test_conv_kernel_matches_mindspore_conv2d_forward_and_gradients(shape, out_channels, kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    fast, reference = conv_pair(shape[1], out_channels, **kwargs)
    assert fast.use_kernel
    rng = np.random.default_rng(sum(shape) + out_channels)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=reference(Tensor(x)).shape).astype(np.float32)
    got, want = forward_and_grads(fast, x, w), forward_and_grads(reference, x, w)
    assert len(got) == (4 if kwargs.get("has_bias") else 3)
    assert_close(got, want, ("y", "dx", "dweight", "dbias"))


def direct_depthwise_calls():
    calls = ctypes.CDLL(conv2d_kernel()).MsforgeDirectDepthwiseCalls
    calls.restype = ctypes.c_int64
    return calls()


@needs_compiler
def test_dilated_depthwise_convolutions_at_stride_1_run_the_direct_loops_and_others_onednn():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 8)).astype(np.float32)
    for kwargs, direct in ((dict(group=8), True), (dict(group=4), False),
                           (dict(group=8, dilation=1, padding=1), False), (dict(group=8, stride=2), False)):
        fast, reference = conv_pair(8, 8, **dict(dict(kernel_size=3, pad_mode="pad", padding=2, dilation=2,
                                                      has_bias=True), **kwargs))
        w = np.random.default_rng(5).normal(size=reference(Tensor(x)).shape).astype(np.float32)
        before = direct_depthwise_calls()
        got = forward_and_grads(fast, x, w)
        calls = direct_depthwise_calls() - before  # the forward and backward calls of the direct loops
        assert (calls >= 2) if direct else (calls == 0), (kwargs, calls)
        assert_close(got, forward_and_grads(reference, x, w), ("y", "dx", "dweight", "dbias"))


@needs_compiler
def test_depthwise_convolutions_on_onednn_when_asked():
    # set_direct_depthwise(False) gives them back to oneDNN (bench/depthwise.py times the two): the same function
    ms.set_context(mode=ms.GRAPH_MODE)
    shape, out_channels, kwargs = DEPTHWISE_CASES[0]
    fast, reference = conv_pair(shape[1], out_channels, **kwargs)
    assert fast.dilated_depthwise and fast.direct_depthwise
    fast.set_direct_depthwise(False)
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    w = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    before = direct_depthwise_calls()
    got = forward_and_grads(fast, x, w)
    assert direct_depthwise_calls() == before
    assert_close(got, forward_and_grads(reference, x, w), ("y", "dx", "dweight", "dbias"))
    with pytest.raises(ValueError, match="set_direct_depthwise"):
        Conv2d(4, 6, 3, stride=2, pad_mode="same").set_direct_depthwise(False)  # MindSpore's Conv2D: no kernel


def winograd_calls():
    calls = ctypes.CDLL(conv2d_kernel()).MsforgeWinogradCalls
    calls.restype = ctypes.c_int64
    return calls()


def avx512():
    with open("/proc/cpuinfo") as f:
        return " avx512f " in f.read()


# 3x3, stride 1, padding 1, channels multiples of 16: the ConvLSTM's gates convs (16x48 and 16x64 -> 128 on 16x16),
# sizes that leave partial tiles (13x21), an image smaller than one tile (1x1), no bias, pad_mode "same", a batch of 1
WINOGRAD_CASES = [((16, 48, 16, 16), 128, dict(pad_mode="pad", padding=1, has_bias=True)),
                  ((16, 64, 16, 16), 128, dict(pad_mode="pad", padding=1, has_bias=True)),
                  ((3, 32, 13, 21), 16, dict(pad_mode="pad", padding=1, has_bias=True)),
                  ((2, 16, 1, 1), 32, dict(pad_mode="pad", padding=1, has_bias=True)),
                  ((1, 16, 5, 7), 48, dict(pad_mode="same"))]


@needs_compiler
@pytest.mark.skipif(not avx512(), reason="Winograd's algorithm runs on AVX-512 CPUs only")
@pytest.mark.parametrize("shape,out_channels,kwargs", WINOGRAD_CASES)
def test_winograd_convolutions_match_mindspore_conv2d_forward_and_gradients(shape, out_channels, kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    fast, reference = conv_pair(shape[1], out_channels, kernel_size=3, **kwargs)
    assert fast.winograd_shape and fast.winograd
    rng = np.random.default_rng(sum(shape) + out_channels)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(shape[0], out_channels, *shape[2:])).astype(np.float32)
    before = winograd_calls()
    got = forward_and_grads(fast, x, w)
    assert winograd_calls() - before >= 3  # the forward of the gradient, its backward, the forward alone
    want = forward_and_grads(reference, x, w)
    # Winograd's transforms add rounding of their own: within 2e-5 of each result's scale
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        assert np.abs(a - b).max() <= 2e-5 * np.abs(b).max(), (name, np.abs(a - b).max() / np.abs(b).max())


@needs_compiler
def test_convolutions_winograd_does_not_cover_run_on_onednn():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.random.default_rng(8).normal(size=(2, 16, 8, 8)).astype(np.float32)
    # channels not multiples of 16, stride 2, 5x5, padding 0, dilation, groups; then Winograd's shape asked not to
    for out_channels, kwargs in ((24, dict(kernel_size=3, padding=1)), (16, dict(kernel_size=3, stride=2, padding=1)),
                                 (16, dict(kernel_size=5, padding=2)), (16, dict(kernel_size=3, padding=0)),
                                 (16, dict(kernel_size=3, padding=2, dilation=2)),
                                 (16, dict(kernel_size=3, padding=1, group=2)), (16, dict(kernel_size=3, padding=1))):
        fast, reference = conv_pair(16, out_channels, pad_mode="pad", has_bias=True, **kwargs)
        assert fast.winograd_shape == (out_channels == 16 and kwargs == dict(kernel_size=3, padding=1))
        if fast.winograd_shape:
            fast.set_winograd(False)
        w = np.random.default_rng(9).normal(size=reference(Tensor(x)).shape).astype(np.float32)
        before = winograd_calls()
        got = forward_and_grads(fast, x, w)
        assert winograd_calls() == before, kwargs
        assert_close(got, forward_and_grads(reference, x, w), ("y", "dx", "dweight", "dbias"))
    with pytest.raises(ValueError, match="set_winograd"):
        Conv2d(16, 16, 3, stride=2, pad_mode="same").set_winograd(False)  # MindSpore's Conv2D: no kernel


WINOGRAD_THREADS = """
import msforge, numpy as np, mindspore as ms
from mindspore import Tensor, nn, ops
from msforge.layers import Conv2d
ms.set_seed(0)  # PyNative: graph mode cannot compile source given with -c
conv = Conv2d(32, 48, 3, pad_mode="pad", padding=1, has_bias=True)
x = Tensor(np.random.default_rng(0).normal(size=(5, 32, 11, 13)).astype(np.float32))
dx = ms.grad(lambda x: (conv(x) ** 2).sum())(x)
dw, db = ms.grad(lambda x: (conv(x) ** 2).sum(), grad_position=None, weights=conv.trainable_params())(x)
np.save(OUT, np.concatenate([a.asnumpy().ravel() for a in (conv(x), dx, dw, db)]))
"""


@needs_compiler
@pytest.mark.skipif(not avx512(), reason="Winograd's algorithm runs on AVX-512 CPUs only")
def test_winograd_results_do_not_depend_on_the_number_of_threads(tmp_path):
    results = []
    for threads in ("1", "2", "3"):
        out = str(tmp_path / f"{threads}.npy")
        result = run_python(f"OUT = {out!r}\n" + WINOGRAD_THREADS, MSFORGE_NUM_THREADS=threads)
        assert result.returncode == 0, result.stderr[-2000:]
        results.append(np.load(out))
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


@needs_compiler
def test_conv_kernel_in_pynative_mode():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        shape, out_channels, kwargs = CONV_CASES[3]
        fast, reference = conv_pair(shape[1], out_channels, **kwargs)
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        w = np.random.default_rng(2).normal(size=(2, 6, 7, 9)).astype(np.float32)
        assert_close(forward_and_grads(fast, x, w), forward_and_grads(reference, x, w), ("y", "dx", "dw", "db"))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@needs_compiler
def test_pynative_layers_that_differ_only_in_stride_or_groups_keep_their_own_output_shapes():
    # PyNative caches inferred shapes by op name, attributes and input shapes: a stride-2 convolution followed by a
    # stride-1 one on the same shapes (SimVP's encoder and decoder) once got the first one's output shape
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x = np.random.default_rng(3).normal(size=(2, 8, 12, 12)).astype(np.float32)
        for stride in (2, 1):
            fast, reference = conv_pair(8, 8, kernel_size=3, stride=stride, pad_mode="pad", padding=1, has_bias=True)
            got, want = fast(Tensor(x)).asnumpy(), reference(Tensor(x)).asnumpy()
            assert got.shape == want.shape == (2, 8, 12 // stride, 12 // stride)
            np.testing.assert_allclose(got, want, atol=1e-5)
        for groups in (2, 4):
            fast, reference = GroupNorm(groups, 8), nn.GroupNorm(groups, 8)
            w = np.random.default_rng(groups).normal(size=x.shape).astype(np.float32)
            assert_close(forward_and_grads(fast, x, w), forward_and_grads(reference, x, w),
                         ("y", "dx", "dgamma", "dbeta"))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@needs_compiler
def test_onednn_picks_direct_kernels_not_im2col_gemm_for_the_convlstm_gates():
    # what the kernel is for: on plain NCHW (MindSpore's own Conv2D) oneDNN runs "x64:gemm:jit"
    impl = ctypes.CDLL(conv2d_kernel()).MsforgeConvImpl
    impl.restype, impl.argtypes = ctypes.c_char_p, [ctypes.c_int64] * 8
    chosen = impl(16, 64, 16, 16, 128, 3, 1, 0).decode().split()
    assert len(chosen) == 4 and chosen[3] == "f32" and not any("gemm" in name for name in chosen[:3]), chosen


@pytest.mark.parametrize("kwargs", [dict(stride=2, pad_mode="same"), dict(stride=2, pad_mode="valid"),
                                    dict(stride=3, pad_mode="pad", padding=1),
                                    dict(pad_mode="pad", padding=(1, 0, 1, 1)), dict(kernel_size=2, pad_mode="same")])
def test_conv_configurations_the_kernel_does_not_cover_run_mindspore_conv2d(kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    kwargs = dict(dict(kernel_size=3, has_bias=True), **kwargs)
    fast, reference = conv_pair(4, 6, **kwargs)
    assert not fast.use_kernel
    x = np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32)
    assert np.array_equal(fast(Tensor(x)).asnumpy(), reference(Tensor(x)).asnumpy())


class ConvNorm(nn.Cell):
    def __init__(self, layers):
        super().__init__()
        self.conv = layers.Conv2d(4, 8, 3, pad_mode="pad", padding=1, has_bias=True)
        self.norm = layers.GroupNorm(2, 8)

    def construct(self, x):
        return self.norm(self.conv(x))


@needs_compiler
def test_mixed_precision_float16_inputs_take_mindspore_kernels():
    # auto_mixed_precision O2 (Trainer precision="16-mixed") casts the layers' inputs to float16: the float32-only
    # kernels must step aside instead of failing at launch
    ms.set_context(mode=ms.GRAPH_MODE)
    fast, reference = ConvNorm(layers), ConvNorm(nn)
    ms.load_param_into_net(fast, {p.name: p for p in reference.get_parameters()})
    assert fast.conv.use_kernel and fast.norm.use_kernel
    for net in (fast, reference):
        ms.amp.auto_mixed_precision(net, "O2", dtype=ms.float16)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 4, 6, 6)).astype(np.float32))
    got, want = fast(x), reference(x)
    assert got.dtype == want.dtype == ms.float16
    assert np.array_equal(got.asnumpy(), want.asnumpy())


needs_bf16 = pytest.mark.skipif(not layers.bfloat16_convolutions(),
                                reason="no bfloat16 convolution kernels on this CPU (AVX512_BF16)")


@needs_bf16
@pytest.mark.parametrize("shape,out_channels,kwargs", [
    ((4, 32, 12, 12), 64, dict(kernel_size=3, pad_mode="pad", padding=1, has_bias=True)),
    ((4, 32, 12, 12), 32, dict(kernel_size=7, pad_mode="pad", padding=9, dilation=3, group=8, has_bias=True)),
    ((4, 16, 12, 12), 16, dict(kernel_size=3, stride=2, pad_mode="pad", padding=1)),
    ((4, 32, 12, 12), 32, dict(kernel_size=7, pad_mode="pad", padding=9, dilation=3, group=32, has_bias=True)),
])
def test_bfloat16_convolution_is_float32_within_bfloat16_rounding(shape, out_channels, kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    fast, reference = conv_pair(shape[1], out_channels, **kwargs)
    net = nn.SequentialCell([fast])
    assert layers.use_bfloat16_convolutions(net) == 1 and fast.bfloat16
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=reference(Tensor(x)).shape).astype(np.float32)
    got, want = forward_and_grads(fast, x, w), forward_and_grads(reference, x, w)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        error = np.abs(a - b).max() / np.abs(b).max()
        if fast.dilated_depthwise:  # msforge's own loops, float32 whatever the flag says
            assert error < 1e-5, (name, error)
        elif fast.winograd_shape and avx512():  # Winograd's algorithm, float32 whatever the flag says
            assert error < 2e-5, (name, error)
        else:  # bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.002); float32 would be below 1e-6
            assert 1e-5 < error < 1e-2, (name, error)


@needs_bf16
def test_bfloat16_winograd_shapes_run_winograd_in_float32_or_bfloat16_direct_when_asked():
    # Winograd in float32 is as fast as oneDNN's bfloat16 direct kernel on these shapes here and more exact, so
    # bf16-mixed keeps it; set_winograd(False) gives the layer the bfloat16 direct kernel
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.random.default_rng(10).normal(size=(4, 32, 12, 12)).astype(np.float32)
    w = np.random.default_rng(11).normal(size=(4, 64, 12, 12)).astype(np.float32)
    results = {}
    for bfloat16, winograd in ((False, True), (True, True), (True, False)):
        ms.set_seed(0)  # the same weights each time
        fast, reference = conv_pair(32, 64, kernel_size=3, pad_mode="pad", padding=1, has_bias=True)
        fast.set_bfloat16(bfloat16)
        fast.set_winograd(winograd)
        before = winograd_calls()
        results[bfloat16, winograd] = forward_and_grads(fast, x, w)
        assert (winograd_calls() > before) == (winograd and avx512())
    want = forward_and_grads(reference, x, w)
    if avx512():  # the flag changes nothing on Winograd's path
        for a, b in zip(results[True, True], results[False, True]):
            assert np.array_equal(a, b)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), results[True, False], want):
        error = np.abs(a - b).max() / np.abs(b).max()
        assert (1e-5 < error < 1e-2) or name == "dbias", (name, error)  # dbias sums dy in float32 either way


@needs_bf16
def test_bfloat16_gets_onednn_bfloat16_kernels_not_its_reference_ones():
    impl = ctypes.CDLL(conv2d_kernel()).MsforgeConvImpl
    impl.restype, impl.argtypes = ctypes.c_char_p, [ctypes.c_int64] * 8
    chosen = impl(16, 32, 16, 16, 64, 3, 1, 1).decode().split()
    assert chosen[3] == "bf16" and not any(name.startswith("ref") for name in chosen[:3]), chosen


def test_bfloat16_on_a_layer_without_the_kernel_is_a_one_line_error():
    conv = Conv2d(4, 4, 3, use_kernel=False)
    assert layers.use_bfloat16_convolutions(nn.SequentialCell([conv])) == 0
    with pytest.raises(ValueError, match="runs MindSpore's Conv2D"):
        conv.set_bfloat16(True)


class GatesLoss(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, gates, c, wh, wc):
        h, c_next = self.layer(gates, c)
        return (h * wh).sum() + (c_next * wc).sum()


def gates_forward_and_grads(layer, gates, c, wh, wc):
    """``(h', c')`` of ``layer(gates, c)``, then d/dgates and d/dc of ``sum(h' * wh) + sum(c' * wc)``."""
    args = [Tensor(a) for a in (gates, c, wh, wc)]
    grads = ms.grad(GatesLoss(layer), grad_position=(0, 1))(*args)
    return tuple(t.asnumpy() for t in (*layer(args[0], args[1]), *grads))


def lstm_float64(gates, c, wh, wc):
    """The LSTM update and its gradients in float64 NumPy, written out by hand."""
    g64, c64 = gates.astype(np.float64), c.astype(np.float64)
    i, f, g, o = (1 / (1 + np.exp(-x)) for x in np.split(g64, 4, axis=1))
    g = np.tanh(np.split(g64, 4, axis=1)[2])
    c_next = f * c64 + i * g
    tc = np.tanh(c_next)
    dc_next = wc + wh * o * (1 - tc * tc)
    dgates = np.concatenate([dc_next * g * i * (1 - i), dc_next * c64 * f * (1 - f), dc_next * i * (1 - g * g),
                             wh * tc * o * (1 - o)], axis=1)
    return o * tc, c_next, dgates, dc_next * f


@needs_compiler
@pytest.mark.parametrize("state_shape", [(16, 32, 16, 16), (3, 5, 7, 9), (2, 8, 7), (2, 3, 2, 4, 5), (1, 1, 1)])
def test_lstm_gates_kernel_matches_float64_and_mindspore_ops_forward_and_gradients(state_shape):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    gates_shape = (state_shape[0], 4 * state_shape[1], *state_shape[2:])
    gates = rng.normal(scale=4.0, size=gates_shape).astype(np.float32)  # well into the saturated ends
    c, wh, wc = (rng.normal(scale=2.0, size=state_shape).astype(np.float32) for _ in range(3))
    fast, reference = LSTMGates(), LSTMGates(use_kernel=False)
    assert fast.use_kernel and not reference.use_kernel
    got = gates_forward_and_grads(fast, gates, c, wh, wc)
    names = ("h", "c", "dgates", "dc")
    assert_close(got, gates_forward_and_grads(reference, gates, c, wh, wc), names)
    for name, a, b in zip(names, got, lstm_float64(gates, c, wh, wc)):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max()), name


@needs_compiler
def test_lstm_gates_kernel_saturates_and_propagates_nan_and_inf():
    ms.set_context(mode=ms.GRAPH_MODE)
    gates = np.zeros((1, 4, 1, 6), np.float32)
    gates[0, :, 0, :] = [[-1e4, 1e4, -100.0, 100.0, np.nan, 0.0]] * 4
    c = np.array([[[[1, 1, 1, 1, 1, np.inf]]]], np.float32)
    h, c_next = (t.asnumpy()[0, 0, 0] for t in LSTMGates()(Tensor(gates), Tensor(c)))
    # all gates -1e4: 0*1 + 0*(-1) = 0; +1e4: 1*1 + 1*1 = 2, h = tanh(2); +-100 likewise within float rounding
    assert np.allclose(c_next[:4], [0, 2, 0, 2], atol=1e-6) and np.allclose(h[:4], [0, np.tanh(2), 0, np.tanh(2)])
    assert np.isnan(c_next[4]) and np.isnan(h[4])  # a NaN gate must reach the loss (overflow detection)
    assert not np.isfinite(c_next[5])  # f = 0.5 times inf


@needs_compiler
def test_lstm_gates_kernel_in_pynative_mode_and_float16_falls_back():
    rng = np.random.default_rng(3)
    gates, c = rng.normal(size=(2, 8, 3, 3)).astype(np.float32), rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        got = gates_forward_and_grads(LSTMGates(), gates, c, np.ones_like(c), np.ones_like(c))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    want = gates_forward_and_grads(LSTMGates(use_kernel=False), gates, c, np.ones_like(c), np.ones_like(c))
    assert_close(got, want, ("h", "c", "dgates", "dc"))
    half = [Tensor(a.astype(np.float16)) for a in (gates, c)]
    got, want = LSTMGates()(*half), LSTMGates(use_kernel=False)(*half)
    assert got[0].dtype == ms.float16 and np.array_equal(got[0].asnumpy(), want[0].asnumpy())


@needs_compiler
def test_lstm_gates_with_mismatched_shapes_is_a_one_line_error_naming_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore writes analyze_fail.ir into the working directory
    ms.set_context(mode=ms.GRAPH_MODE)
    with pytest.raises(ValueError, match=r"gates of shape \(2, 12, 3, 3\) must be \(N, 4H, ...\) for c of shape "
                                         r"\(2, 4, 3, 3\)"):
        LSTMGates()(Tensor(np.ones((2, 12, 3, 3), np.float32)), Tensor(np.ones((2, 4, 3, 3), np.float32)))


class NormGatesLoss(nn.Cell):
    """``sum(h' * wh) + sum(c' * wc)`` of ``update(gates, c, gamma, beta)``."""

    def __init__(self, update):
        super().__init__()
        self.update = update

    def construct(self, gates, c, gamma, beta, wh, wc):
        h, c_next = self.update(gates, c, gamma, beta)
        return (h * wh).sum() + (c_next * wc).sum()


class SeparateNormGates(nn.Cell):
    """GroupNorm's kernel (its primitive, fed gamma and beta), then LSTMGates' kernel: what the fused one replaces."""

    def __init__(self, groups):
        super().__init__()
        self.norm, self.gates = GroupNorm(groups, 4 * groups), LSTMGates()  # the norm's own Parameters go unused

    def construct(self, gates, c, gamma, beta):
        return self.gates(self.norm.forward_op(gates, gamma, beta, self.norm.eps_tensor)[0], c)


def norm_gates_forward_and_grads(update, arrays):
    """``(h', c')`` of ``update(gates, c, gamma, beta)``, then the gradients of NormGatesLoss by those four."""
    args = [Tensor(a) for a in arrays]
    grads = ms.grad(NormGatesLoss(update), grad_position=(0, 1, 2, 3))(*args)
    return tuple(t.asnumpy() for t in (*update(*args[:4]), *grads))


@needs_compiler
@pytest.mark.parametrize("state_shape,groups", [((16, 32, 16, 16), 4), ((3, 6, 5, 7), 3), ((2, 2, 7), 1),
                                                ((2, 4, 1, 1), 8)])
def test_group_norm_lstm_gates_kernel_matches_the_two_kernels_and_mindspore_ops(state_shape, groups):
    # groups of 3 and 8 do not line up with the four gate blocks: the statistics must follow the groups anyway
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(groups)
    channels = 4 * state_shape[1]
    gates = rng.normal(loc=1.0, scale=3.0, size=(state_shape[0], channels, *state_shape[2:])).astype(np.float32)
    c, wh, wc = (rng.normal(scale=2.0, size=state_shape).astype(np.float32) for _ in range(3))
    gamma, beta = rng.normal(size=channels).astype(np.float32), rng.normal(size=channels).astype(np.float32)
    arrays = (gates, c, gamma, beta, wh, wc)
    fused, fallback = GroupNormLSTMGates(groups), GroupNormLSTMGates(groups, use_kernel=False)
    assert fused.use_kernel and not fallback.use_kernel
    got = norm_gates_forward_and_grads(fused, arrays)
    names = ("h", "c", "dgates", "dc", "dgamma", "dbeta")
    assert_close(got, norm_gates_forward_and_grads(SeparateNormGates(groups), arrays), names)
    assert_close(got, norm_gates_forward_and_grads(fallback, arrays), names)


@needs_compiler
def test_group_norm_lstm_gates_float16_falls_back_and_bad_shapes_are_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore writes analyze_fail.ir into the working directory
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(1)
    half = [Tensor(rng.normal(size=shape).astype(np.float16)) for shape in ((2, 8, 3, 3), (2, 2, 3, 3), (8,), (8,))]
    got, want = GroupNormLSTMGates(2)(*half), GroupNormLSTMGates(2, use_kernel=False)(*half)
    assert got[0].dtype == ms.float16 and np.array_equal(got[0].asnumpy(), want[0].asnumpy())
    ones = [Tensor(np.ones(shape, np.float32)) for shape in ((2, 12, 3, 3), (2, 3, 3, 3), (12,), (12,))]
    with pytest.raises(ValueError, match=r"^GroupNormLSTMGates: gates of shape \(2, 12, 3, 3\) must be \(N, 4H, ...\) "
                                         r"for c of shape \(2, 3, 3, 3\) \(N, H, ...\), 4H divisible by "
                                         r"num_groups=5$"):
        GroupNormLSTMGates(5)(*ones)


def _erf(x):
    return np.vectorize(math.erf)(x)


def gelu_float64(x, w):
    """Exact GELU and d/dx of ``sum(gelu(x) * w)`` in float64."""
    x = x.astype(np.float64)
    cdf, pdf = 0.5 * (1 + _erf(x / math.sqrt(2))), np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, w * (cdf + x * pdf)


def silu_float64(x, w):
    x = x.astype(np.float64)
    s = 1 / (1 + np.exp(-x))
    return x * s, w * s * (1 + x * (1 - s))


def glu_float64(x, w):
    a, b = np.split(x.astype(np.float64), 2, axis=1)
    s = 1 / (1 + np.exp(-b))
    return a * s, np.concatenate([w * s, w * a * s * (1 - s)], axis=1)


ACTIVATIONS = {"gelu": (lambda: GELU(approximate=False), lambda: nn.GELU(approximate=False), gelu_float64),
               "silu": (SiLU, nn.SiLU, silu_float64),
               "glu": (lambda: GLU(axis=1), lambda: nn.GLU(axis=1), glu_float64)}


@needs_compiler
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(16, 640, 8, 8), (3, 6, 5, 7), (2, 4), (1, 2, 1, 1)])
def test_activation_kernels_match_float64_and_mindspore_forward_and_gradients(name, shape):
    ms.set_context(mode=ms.GRAPH_MODE)
    make, make_reference, float64 = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(scale=4.0, size=shape).astype(np.float32)  # into the saturated ends
    layer = make()
    assert layer.use_kernel
    y = layer(Tensor(x)).asnumpy()
    w = rng.normal(size=y.shape).astype(np.float32)
    got = forward_and_grads(layer, x, w)
    want = float64(x, w)
    for what, a, b in zip(("y", "dx"), got, want):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max()), what
    assert_close(got, forward_and_grads(make_reference(), x, w), ("y", "dx"))


@needs_compiler
def test_activation_kernels_saturate_and_propagate_nan():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.array([[-1e4, 1e4, -100.0, 100.0, 0.0, np.nan]], np.float32)
    gelu, silu = GELU(approximate=False)(Tensor(x)).asnumpy()[0], SiLU()(Tensor(x)).asnumpy()[0]
    for y in (gelu, silu):
        assert np.allclose(y[:5], [0, 1e4, 0, 100, 0], atol=1e-30) and np.isnan(y[5])  # a NaN must reach the loss
    glu = GLU(axis=1)(Tensor(np.concatenate([np.ones_like(x), x], axis=1))).asnumpy()[0]
    assert np.allclose(glu[:5], [0, 1, 0, 1, 0.5], atol=1e-30) and np.isnan(glu[5])


@needs_compiler
def test_activations_fall_back_to_mindspore_ops_where_the_kernel_does_not_apply():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = Tensor(np.random.default_rng(1).normal(size=(2, 6, 3, 3)).astype(np.float32))
    tanh_gelu, glu_last_axis = GELU(), GLU()  # nn.GELU's default tanh form; nn.GLU's default axis -1
    assert not tanh_gelu.use_kernel and not glu_last_axis.use_kernel
    assert np.array_equal(tanh_gelu(x).asnumpy(), nn.GELU()(x).asnumpy())
    assert np.array_equal(glu_last_axis(x[..., :2]).asnumpy(), nn.GLU()(x[..., :2]).asnumpy())
    half = x.astype(ms.float16)  # mixed precision: MindSpore's ops in float16
    for layer, reference in [(GELU(approximate=False), nn.GELU(approximate=False)), (SiLU(), nn.SiLU()),
                             (GLU(axis=1), nn.GLU(axis=1))]:
        assert layer.use_kernel
        got = layer(half)
        assert got.dtype == ms.float16 and np.array_equal(got.asnumpy(), reference(half).asnumpy())


@needs_compiler
def test_activation_kernels_in_pynative_mode():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=3.0, size=(2, 6, 3, 3)).astype(np.float32)
    for name in sorted(ACTIVATIONS):
        make, make_reference, _ = ACTIVATIONS[name]
        w = rng.normal(size=make_reference()(Tensor(x)).shape).astype(np.float32)
        ms.set_context(mode=ms.PYNATIVE_MODE)
        try:
            layer = make()
            assert layer.use_kernel
            got = forward_and_grads(layer, x, w)
        finally:
            ms.set_context(mode=ms.GRAPH_MODE)
        assert_close(got, forward_and_grads(make_reference(), x, w), ("y", "dx"))


@needs_compiler
def test_glu_over_an_odd_axis_is_a_one_line_error_naming_the_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore writes analyze_fail.ir into the working directory
    ms.set_context(mode=ms.GRAPH_MODE)
    with pytest.raises(ValueError, match=r"GLU: input of shape \(2, 5, 3\) needs an even size on axis 1"):
        GLU(axis=1)(Tensor(np.ones((2, 5, 3), np.float32)))


@pytest.mark.parametrize("make,parameter,size", [
    (lambda module: module.Conv2d(3, 4, 3, has_bias=True), "bias", 4),
    (lambda module: module.GroupNorm(2, 8), "gamma", 8)], ids=["conv2d", "groupnorm"])
def test_same_parameters_as_the_nn_layer_so_checkpoints_move_between_them(tmp_path, make, parameter, size):
    fast, reference = make(layers), make(nn)
    assert [(p.name, p.shape) for p in fast.get_parameters()] == [(p.name, p.shape) for p in reference.get_parameters()]
    getattr(fast, parameter).set_data(Tensor(np.arange(size, dtype=np.float32)))
    path = str(tmp_path / "layer.ckpt")
    ms.save_checkpoint(fast, path)
    ms.load_param_into_net(reference, ms.load_checkpoint(path))
    assert np.array_equal(getattr(reference, parameter).asnumpy(), np.arange(size, dtype=np.float32))


def run_python(code, **env):
    full = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=full,
                          timeout=300)


CHECK = """
import msforge, numpy as np, mindspore as ms
from mindspore import Tensor, nn
from msforge.layers import GELU, Conv2d, GroupNorm, LSTMGates
act = GELU(approximate=False)
norm, conv, reference = GroupNorm(2, 4), Conv2d(4, 4, 3, has_bias=True), nn.Conv2d(4, 4, 3, has_bias=True)
gates, gates_reference = LSTMGates(), LSTMGates(use_kernel=False)
ms.load_param_into_net(conv, {p.name: p for p in reference.get_parameters()})
x = Tensor(np.random.default_rng(0).normal(size=(2, 4, 3, 3)).astype(np.float32))
diff = max(float(np.abs(norm(x).asnumpy() - nn.GroupNorm(2, 4)(x).asnumpy()).max()),
           float(np.abs(conv(x).asnumpy() - reference(x).asnumpy()).max()),
           float(np.abs(gates(x, x[:, :1])[0].asnumpy() - gates_reference(x, x[:, :1])[0].asnumpy()).max()),
           float(np.abs(act(x).asnumpy() - nn.GELU(approximate=False)(x).asnumpy()).max()))
print("use_kernel", norm.use_kernel, conv.use_kernel, gates.use_kernel, act.use_kernel, "diff", diff)
"""


@needs_compiler
def test_builds_into_the_cache_dir_once(tmp_path):
    # a temporary file left by a build killed hours ago is removed; a fresh one may be a live build's and stays
    os.makedirs(tmp_path / "kernels")
    abandoned, live = tmp_path / "kernels" / "tmpold.so.tmp", tmp_path / "kernels" / "tmpnew.so.tmp"
    abandoned.write_bytes(b"x" * 1000)
    live.write_bytes(b"")
    os.utime(abandoned, (1e9, 1e9))
    first = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path))
    assert not abandoned.exists() and live.exists()
    live.unlink()
    assert "use_kernel True True True True diff" in first.stdout, first.stderr
    built = sorted(os.listdir(tmp_path / "kernels"))
    # the four kernels and conv2d's private copy of MindSpore's oneDNN
    assert [name.split("-")[0] for name in built] == ["libactivations", "libconv2d", "libdnnl", "libgroup_norm",
                                                      "liblstm_gates"], built
    assert all(name.endswith(".so") for name in built)
    stamps = [os.stat(tmp_path / "kernels" / name).st_mtime_ns for name in built]
    second = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path))
    assert "use_kernel True True True True" in second.stdout
    assert sorted(os.listdir(tmp_path / "kernels")) == built
    assert [os.stat(tmp_path / "kernels" / name).st_mtime_ns for name in built] == stamps


INSTANCE = """
import ctypes, os, msforge, numpy as np, mindspore as ms
from mindspore import Tensor, nn
from msforge.layers import Conv2d, conv2d_kernel
x = Tensor(np.ones((2, 4, 8, 8), np.float32))
Conv2d(4, 8, 3, has_bias=True)(x), nn.Conv2d(4, 8, 3)(x)
ours = ctypes.CDLL(conv2d_kernel())
ours.MsforgeOneDnnInstance.restype = ctypes.c_char_p
theirs = ctypes.CDLL(os.path.join(os.path.dirname(ms.__file__), "lib", "libdnnl.so.3"))  # the loaded instance
with open(os.environ["INSTANCE_ANSWER"], "w") as f:
    f.write(f"ours {ours.MsforgeOneDnnInstance().decode()} mindspore isa=0x{theirs.dnnl_get_effective_cpu_isa():x}")
"""


def onednn_instances(**env):
    """(instance, isa) of msforge's convolutions and MindSpore's isa, each from a fresh process. The answer comes in a
    file, not on stdout: with ONEDNN_VERBOSE, both oneDNN instances write there from their own threads, and a busy
    machine could flush part of their line just before Python's print, leaving no line that starts with "ours"."""
    with tempfile.TemporaryDirectory() as folder:
        answer = os.path.join(folder, "answer")
        result = run_python(INSTANCE, INSTANCE_ANSWER=answer, **env)
        assert result.returncode == 0 and os.path.isfile(answer), result.stderr[-2000:]
        with open(answer) as f:
            _, instance, ours, _, theirs = f.read().split()
    return instance, int(ours[4:], 16), int(theirs[4:], 16), result


@needs_compiler
def test_convolutions_run_on_a_private_onednn_without_mindspores_isa_cap():
    # MindSpore's instance stays capped at AVX2 (msforge/__init__.py); ours may use the CPU's best kernels
    instance, ours, theirs, _ = onednn_instances()
    assert instance == "private" and ours >= theirs
    with open("/proc/cpuinfo") as f:
        if " avx512f " in f.read():
            assert ours > theirs
    instance, ours_shared, theirs_shared, _ = onednn_instances(MSFORGE_ONEDNN_PRIVATE="0")
    assert instance == "shared" and ours_shared == theirs_shared == theirs


@needs_compiler
def test_onednn_verbose_output_works_with_both_instances_loaded():
    # ONEDNN_VERBOSE formats floats through the C library: it crashed when the copy had a C library of its own
    *_, result = onednn_instances(ONEDNN_VERBOSE="1")
    assert result.returncode == 0, result.stderr[-2000:]
    convolutions = [line for line in result.stdout.splitlines() if ",convolution," in line and "exec" in line]
    assert len(convolutions) >= 2, result.stdout[-2000:]


@needs_compiler
@pytest.mark.parametrize("wanted", [None, "1", "3"])
def test_kernel_threads_are_the_cpus_available_or_msforge_num_threads(wanted):
    script = ("import msforge, numpy as np\nfrom mindspore import Tensor\nfrom msforge.layers import Conv2d\n"
              "Conv2d(4, 8, 3, has_bias=True)(Tensor(np.ones((2, 4, 8, 8), np.float32)))\n")
    env = {"ONEDNN_VERBOSE": "1"} if wanted is None else {"ONEDNN_VERBOSE": "1", "MSFORGE_NUM_THREADS": wanted}
    result = run_python(script, **env)
    assert result.returncode == 0, result.stderr[-2000:]
    # only msforge's oneDNN instance runs a primitive here, so it is the one reporting its thread pool
    expected = wanted or str(len(os.sched_getaffinity(0)))
    assert f"runtime:threadpool,nthr:{expected}" in result.stdout, result.stdout[:2000]


@pytest.mark.parametrize("env,reason", [({"MSFORGE_KERNELS": "0"}, "MSFORGE_KERNELS=0"),
                                        ({"CXX": "/bin/false"}, "/bin/false failed (exit code 1)"),
                                        ({"CXX": sys.executable}, "failed (exit code 2)")])
def test_falls_back_to_mindspore_kernels_with_one_warning_per_layer_naming_the_reason(tmp_path, env, reason):
    result = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path), **env)
    assert "use_kernel False False False False diff 0.0" in result.stdout, result.stderr
    for layer in ("GroupNorm uses MindSpore's GroupNorm kernel", "Conv2d uses MindSpore's Conv2D kernels",
                  "LSTMGates uses MindSpore's elementwise ops", "GELU, SiLU and GLU use MindSpore's elementwise ops"):
        warnings = [line for line in result.stderr.splitlines() if layer in line]
        assert len(warnings) == 1 and reason in warnings[0], result.stderr
    left = os.listdir(tmp_path / "kernels") if (tmp_path / "kernels").exists() else []
    assert left == []  # no library, no temporary file
