"""Tests of models/: ConvLSTM and ConvGRU cells, the encoder-forecaster and their msforge Modules (real MindSpore, CPU).

Everything runs in graph mode (the mode the Trainer compiles the train step in) on tiny shapes.
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from models import (ConvGRUCell, ConvGRUModule, ConvLSTMCell, ConvLSTMModule, EncoderForecaster, cpu_small_config,
                    depth_to_space, seed_config, space_to_depth)
from msforge import metrics


pytestmark = pytest.mark.usefixtures("graph_mode")  # tests/conftest.py


def n_params(cell):
    return int(sum(np.prod(p.shape) for p in cell.trainable_params()))


# -- numpy reference ------------------------------------------------------------------------------------------------
def np_conv(x, w, b):
    """Cross-correlation with zero padding k//2 (stride 1), float64."""
    k = w.shape[-1]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], height, width))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + height, j:j + width], w[:, :, i, j])
    return out + b[None, :, None, None]


def np_group_norm(x, groups, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(n, c, h, w) * gamma[None, :, None, None] + beta[None, :, None, None]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def randomize(cell, rng):
    """Give every parameter (GroupNorm's gamma and beta too) random values; return them as float64 numpy."""
    values = {}
    for p in cell.get_parameters():
        v = rng.normal(0.0, 0.3, p.shape).astype(np.float32)
        if p.name.endswith("gamma"):
            v += 1.0
        p.set_data(Tensor(v))
        values[p.name.split(".")[-2] + "." + p.name.split(".")[-1]] = v.astype(np.float64)
    return values


# -- cells ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", [True, False])
def test_convlstm_cell_matches_numpy(norm):
    rng = np.random.default_rng(0)
    cin, hidden, k = 3, 16, 3  # 4*16 = 64 gate channels -> GroupNorm with 2 groups
    cell = ConvLSTMCell(cin, hidden, k, norm=norm)
    w = randomize(cell, rng)
    x, h, c = (rng.normal(0, 1, (2, ch, 5, 6)).astype(np.float32) for ch in (cin, hidden, hidden))
    h1, c1 = cell(Tensor(x), Tensor(h), Tensor(c))

    gates = np_conv(np.concatenate([x, h], 1), w["conv.weight"], w["conv.bias"])
    if norm:
        gates = np_group_norm(gates, 2, w["norm.gamma"], w["norm.beta"])
    i, f, g, o = np.split(gates, 4, axis=1)
    c_ref = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_ref = sigmoid(o) * np.tanh(c_ref)
    np.testing.assert_allclose(c1.asnumpy(), c_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(h1.asnumpy(), h_ref, atol=1e-5, rtol=0)
    assert cell.n_states == 2 and len(cell.zero_state(2, 5, 6)) == 2


def test_convgru_cell_matches_numpy():
    rng = np.random.default_rng(1)
    cin, hidden, k = 2, 64, 3  # 2*64 gate channels -> 4 groups, 64 candidate channels -> 2 groups
    cell = ConvGRUCell(cin, hidden, k)
    w = randomize(cell, rng)
    x, h = (rng.normal(0, 1, (2, ch, 4, 5)).astype(np.float32) for ch in (cin, hidden))
    (h1,) = cell(Tensor(x), Tensor(h))

    gates = np_group_norm(np_conv(np.concatenate([x, h], 1), w["gates.weight"], w["gates.bias"]), 4,
                          w["gates_norm.gamma"], w["gates_norm.beta"])
    r, z = np.split(sigmoid(gates), 2, axis=1)
    n = np_group_norm(np_conv(np.concatenate([x, r * h], 1), w["candidate.weight"], w["candidate.bias"]), 2,
                      w["candidate_norm.gamma"], w["candidate_norm.beta"])
    h_ref = (1 - z) * h + z * np.tanh(n)
    np.testing.assert_allclose(h1.asnumpy(), h_ref, atol=1e-5, rtol=0)
    assert cell.n_states == 1 and len(cell.zero_state(2, 4, 5)) == 1


# -- space-to-depth -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 4])
def test_space_to_depth_layout_and_round_trip(p):
    x = np.random.default_rng(2).random((2, 3, 8, 12)).astype(np.float32)
    y = space_to_depth(Tensor(x), p).asnumpy()
    assert y.shape == (2, 3 * p * p, 8 // p, 12 // p)
    for c, i, j, a, b in [(0, 0, 0, 0, 0), (2, p - 1, 1, 1, 2), (1, 1, p - 1, 8 // p - 1, 12 // p - 1)]:
        assert y[1, c * p * p + i * p + j, a, b] == x[1, c, a * p + i, b * p + j]
    np.testing.assert_array_equal(y, space_to_depth(x, p))  # numpy and Tensor paths agree
    np.testing.assert_array_equal(depth_to_space(Tensor(y), p).asnumpy(), x)  # exact round trip
    np.testing.assert_array_equal(depth_to_space(space_to_depth(x, p), p), x)


# -- encoder-forecaster ---------------------------------------------------------------------------------------------
TINY_SEED = dict(hidden=(4, 8, 8), stem_channels=4, head_channels=4, forecaster_input_channels=8)


@pytest.mark.parametrize("cell, arch", [
    (ConvLSTMCell, seed_config(**TINY_SEED, n_target=2)),  # patch 1, two stride-2 levels
    # patch 4, the forecaster fed its predictions
    (ConvLSTMCell, cpu_small_config(hidden=(4, 4), kernel_sizes=(3, 3), n_target=2, feed_predictions=True)),
    (ConvGRUCell, seed_config(**TINY_SEED, patch=2, n_target=2, output_activation="sigmoid")),
])
def test_output_shapes(cell, arch):
    net = EncoderForecaster(cell=cell, **arch)
    x = Tensor(np.random.default_rng(3).random((2, 3, 1, 16, 16)).astype(np.float32))
    y = net(x).asnumpy()
    assert y.shape == (2, 2, 1, 16, 16)  # 3 observed frames, n_target = 2 predicted
    assert np.isfinite(y).all() and y.std() > 0
    if arch["output_activation"] == "sigmoid":
        assert 0 <= y.min() and y.max() <= 1


def test_config_errors():
    with pytest.raises(ValueError, match="feed_predictions"):
        EncoderForecaster(**seed_config(feed_predictions=True))  # seed feeds 96 zero channels, a frame has 16
    with pytest.raises(ValueError, match="equal length"):
        EncoderForecaster(hidden=(8, 8), kernel_sizes=(3,))
    with pytest.raises(TypeError, match="unknown"):
        ConvLSTMModule("cpu_small", hiden=(8,))
    with pytest.raises(ValueError, match=r"n_target=3 and out_frames=4 disagree"):
        ConvLSTMModule("cpu_small", hidden=(4, 4), n_target=3, out_frames=4)


def test_architecture_names_of_base_arguments_set_both():
    # n_target / in_channels (the architecture's keys, in older configs) and out_frames / frame_shape (the base's)
    module = ConvLSTMModule("cpu_small", hidden=(4, 4), kernel_sizes=(3, 3), n_target=3, in_channels=3)
    assert (module.out_frames, module.frame_shape, module.net.n_target) == (3, (3, 64, 64), 3)
    module = ConvGRUModule("cpu_small", hidden=(4, 4), kernel_sizes=(3, 3), out_frames=2, frame_shape=(2, 32, 32))
    assert (module.config["n_target"], module.config["in_channels"]) == (2, 2)
    assert module.net.frame_channels == 2 * 4 * 4  # 2 channels on 4x4 patches


def test_hyperparameters_and_optimizer():
    module = ConvGRUModule("cpu_small", lr=3e-3, hidden=(8, 8))
    assert dict(module.hparams) == {"preset": "cpu_small", "lr": 3e-3, "hidden": (8, 8), "weight_decay": 0.0,
                                    "loss": "mse", "in_frames": 10, "out_frames": 10, "frame_shape": (1, 64, 64)}
    assert isinstance(module.net.enc_cells[1], ConvGRUCell) and module.net.enc_cells[1].hidden == 8
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, nn.Adam) and np.isclose(float(optimizer.learning_rate.asnumpy()), 3e-3)
    assert len(optimizer.parameters) == len(module.trainable_params())

    class Scheduled(ConvLSTMModule):
        def lr_scheduler(self, optimizer):
            return {"scheduler": "a scheduler", "interval": "step"}

    config = Scheduled("cpu_small", hidden=(8, 8)).configure_optimizers()
    assert isinstance(config["optimizer"], nn.Adam) and config["lr_scheduler"]["interval"] == "step"


# -- parameter counts, from the layer shapes --------------------------------------------------------------------------
def conv(cin, cout, k):
    return cin * cout * k * k + cout


def lstm(cin, hidden, k=5):
    return conv(cin + hidden, 4 * hidden, k) + 2 * 4 * hidden  # + GroupNorm gamma, beta


def gru(cin, hidden, k=5):
    return conv(cin + hidden, 2 * hidden, k) + 2 * 2 * hidden + conv(cin + hidden, hidden, k) + 2 * hidden


def test_parameter_counts():
    def seed_layout(cell):
        encoder = conv(1, 16, 3) + cell(16, 64) + conv(64, 64, 3) + cell(64, 96) + conv(96, 96, 3) + cell(96, 96)
        forecaster = (cell(96, 96) + conv(96, 96, 4) + cell(96, 96) + conv(96, 96, 4) + cell(96, 64)
                      + conv(64, 16, 3) + conv(16, 1, 1))
        return encoder + forecaster

    seed = seed_layout(lstm)
    assert 9.00e6 <= seed <= 9.06e6  # the issue's ~9.0M (9.03M for the PyTorch twin)
    assert n_params(ConvLSTMModule("seed")) == seed == 9_032_225
    assert n_params(ConvGRUModule("seed")) == seed_layout(gru)
    small = 2 * (lstm(16, 64) + lstm(64, 64)) + conv(64, 16, 1)
    assert n_params(ConvLSTMModule("cpu_small")) == small == 2_666_512
    assert n_params(ConvLSTMModule("cpu_small", feed_predictions=True)) == small
    assert n_params(ConvGRUModule("cpu_small")) == 2 * (gru(16, 64) + gru(64, 64)) + conv(64, 16, 1)


# -- training ---------------------------------------------------------------------------------------------------------
class TrainStep(nn.Cell):
    """Forward through ``training_step``, gradients, Adam; returns (loss, mse, mae, gradient norms)."""

    def __init__(self, module, optimizer):
        super().__init__(auto_prefix=False)
        self.module, self.optimizer = module, optimizer
        self.grad_fn = ms.value_and_grad(self.forward, None, optimizer.parameters, has_aux=True)

    def forward(self, inputs, targets):
        out = self.module.training_step((inputs, targets))
        return out["loss"], out["mse"], out["mae"]

    def construct(self, inputs, targets):
        (loss, mse, mae), grads = self.grad_fn(inputs, targets)
        self.optimizer(grads)
        return loss, mse, mae, ops.stack([ops.norm(g) for g in grads])


def moving_square(batch=2, frames=8, size=16):
    """A 4x4 square crossing the frame diagonally, a different start per sequence."""
    video = np.zeros((batch, frames, 1, size, size), np.float32)
    for b in range(batch):
        for t in range(frames):
            y, x = (2 * b + t) % (size - 4), (3 * b + t) % (size - 4)
            video[b, t, 0, y:y + 4, x:x + 4] = 1.0
    return Tensor(video[:, :frames // 2]), Tensor(video[:, frames // 2:])


@pytest.mark.parametrize("module_class, arch", [
    # the seed's layout on 2 levels: stem, stride-2 conv, transposed conv, head
    (ConvLSTMModule, dict(preset="seed", hidden=(4, 8), kernel_sizes=(3, 3), downsample=(False, True), n_target=3,
                          stem_channels=4, head_channels=4, forecaster_input_channels=8)),
    (ConvGRUModule, dict(preset="cpu_small", hidden=(8, 8), kernel_sizes=(3, 3), n_target=3, feed_predictions=True)),
])
def test_training_reduces_loss(module_class, arch):
    ms.set_seed(0)
    module = module_class(lr=1e-2, **arch)
    assert module.hparams.lr == 1e-2 and module.hparams.hidden == arch["hidden"]
    assert isinstance(module.net.enc_cells[0], module.cell_class)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, nn.Adam) and np.isclose(float(optimizer.learning_rate.asnumpy()), 1e-2)
    step = TrainStep(module, optimizer)
    inputs, targets = moving_square(frames=6)
    losses = []
    for i in range(10):
        loss, mse, mae, grad_norms = (v.asnumpy() for v in step(inputs, targets))
        losses.append(float(loss))
        if i == 0:
            # every weight tensor is reached by the gradient (no unused or disconnected layer)
            assert (grad_norms > 0).all(), [p.name for p, g in zip(optimizer.parameters, grad_norms) if g == 0]
            # "mse"/"mae" are per-frame sums over the 16x16 pixels: loss (per-pixel mean) times 256
            assert np.isclose(mse, loss * 256, rtol=1e-4) and mae > 0
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < 0.75 * losses[0], losses  # reached 0.30 (LSTM) and 0.26 (GRU) of the first loss


def test_convlstm_trains_alike_on_winograd_and_on_the_direct_convolutions():
    """Channels in multiples of 16 put the gate convolutions on Winograd's algorithm (AVX-512 CPUs): 6 training steps
    follow the same losses as on oneDNN's direct kernels, to float32 rounding. Adam updates the weights in place
    between steps, so this also checks that a kernel transform kept from an earlier call is dropped when the weight's
    values change (a stale one fails here)."""
    import ctypes

    from msforge.layers import conv2d_kernel, kernel_convolutions

    with open("/proc/cpuinfo") as f:
        if " avx512f " not in f.read() or conv2d_kernel() is None:
            pytest.skip("Winograd's algorithm runs in msforge's kernel on AVX-512 CPUs only")
    calls = ctypes.CDLL(conv2d_kernel()).MsforgeWinogradCalls
    calls.restype = ctypes.c_int64
    inputs, targets = moving_square(frames=6)
    runs = []
    for winograd in (True, False):
        ms.set_seed(0)
        module = ConvLSTMModule(lr=1e-2, preset="cpu_small", hidden=(16, 16), kernel_sizes=(3, 3), n_target=3)
        gates = [conv for conv in kernel_convolutions(module) if conv.winograd_shape]
        assert len(gates) == 4  # 2 encoder + 2 forecaster cells
        for conv in gates:
            conv.set_winograd(winograd)
        step = TrainStep(module, module.configure_optimizers())
        before = calls()
        runs.append([float(step(inputs, targets)[0].asnumpy()) for _ in range(6)])
        assert (calls() > before) == winograd
    assert runs[0][-1] < 0.8 * runs[0][0]
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4)


# -- host-side steps ------------------------------------------------------------------------------------------------
class FakeTrainer:
    def __init__(self):
        self.logged = {}

    def log_from_module(self, name, value, prog_bar=False, on_step=False, on_epoch=True, batch_size=None):
        self.logged[name] = (float(value), prog_bar, batch_size)


def test_module_steps_log_and_predict():
    module = ConvLSTMModule("cpu_small", hidden=(4, 4), kernel_sizes=(3, 3), in_frames=4, n_target=4,
                            frame_shape=(1, 16, 16))
    assert module.out_frames == 4 and module.net.n_target == 4
    module.trainer = FakeTrainer()
    inputs, targets = (t.asnumpy() for t in moving_square(batch=3))
    pred = module.predict_step((inputs, targets), 0)
    assert pred.shape == targets.shape and pred.min() >= 0 and pred.max() <= 1
    np.testing.assert_allclose(module.predict_step(Tensor(inputs), 0), pred, atol=1e-6)

    module.validation_step((Tensor(inputs), Tensor(targets)), 0)
    module.test_step((inputs, targets), 0)
    logged = module.trainer.logged
    raw = module(Tensor(inputs)).asnumpy()
    # as published tables: MSE, MAE and val_loss of the raw outputs, SSIM and PSNR of the clipped ones
    expected = metrics.video_metrics(raw, targets)
    expected.update(mse_clipped=metrics.mse(pred, targets), mae_clipped=metrics.mae(pred, targets))
    assert np.isclose(logged["val_loss"][0], np.mean((raw - targets) ** 2), rtol=1e-4)
    assert logged["val_loss"][1:] == (True, 3)
    for name in ("mse", "mae", "ssim", "psnr", "mse_clipped", "mae_clipped"):
        for prefix in ("val", "test"):
            value, _, batch_size = logged[f"{prefix}_{name}"]
            assert np.isclose(value, expected[name], rtol=1e-4) and batch_size == 3, (prefix, name)
    assert np.isclose(logged["val_mse"][0], logged["val_loss"][0] * 16 * 16, rtol=1e-4)

    images = module.images_for_logging((inputs, targets))
    assert sorted(images) == ["input", "prediction", "target"]
    for tag, frames in images.items():
        assert frames.shape == (4, 1, 16, 16) and frames.min() >= 0 and frames.max() <= 1, tag
    np.testing.assert_array_equal(images["target"], targets[0])
    np.testing.assert_allclose(images["prediction"], pred[0], atol=1e-6)
