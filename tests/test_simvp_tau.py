"""Tests of models/simvp.py (SimVP with gSTA blocks) and models/tau.py (TAU), real MindSpore on CPU, graph mode.

Shapes, parameter counts against a formula derived from the architecture, gradients reaching every parameter, the
differential divergence term, and real Trainer fits (the compiled train step) on tiny clips. The outputs against
independent PyTorch twins are checked by bench/twins_simvp.py (torch is not needed here).
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)

import importlib.util
import re
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor, nn, ops

from models.simvp import SimVP
from models.tau import TAU, differential_divergence
from callbacks import ModelCheckpoint
from msforge import Callback, DataLoader, Trainer

TINY = dict(hid_S=4, hid_T=8, N_S=2, N_T=2, mlp_ratio=2.0, attention_kernel=9)


pytestmark = pytest.mark.usefixtures("graph_mode")  # tests/conftest.py


def n_params(cell):
    return int(sum(np.prod(p.shape) for p in cell.trainable_params()))


def random_clip(shape, seed=0):
    return Tensor(np.random.default_rng(seed).random(shape, dtype=np.float32))


# -- shapes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [SimVP, TAU])
def test_output_shapes(model_class):
    # the default clip (10 frames in, 10 out, 1x64x64) with the paper's encoder layout (N_S=4: 64 -> 16)
    model = model_class(hid_S=4, hid_T=8, N_S=4, N_T=2, mlp_ratio=2.0)
    model.set_train(False)
    assert model(random_clip((2, 10, 1, 64, 64))).shape == (2, 10, 1, 64, 64)
    # other frame counts and sizes, colour, patches
    model = model_class(in_frames=4, out_frames=7, frame_shape=(3, 24, 40), patch=2, **TINY)
    model.set_train(False)
    assert model(random_clip((3, 4, 3, 24, 40))).shape == (3, 7, 3, 24, 40)


def test_more_or_fewer_output_frames_than_input_frames():
    # 7 out of 4 in: the network rolled forward on its own 4 predictions, the first 3 of its second pass kept
    model = SimVP(in_frames=4, out_frames=7, frame_shape=(1, 8, 8), **TINY)
    model.set_train(False)
    x = random_clip((2, 4, 1, 8, 8))
    y = model(x).asnumpy()
    once = model.net(x)
    np.testing.assert_allclose(y[:, :4], once.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(y[:, 4:], model.net(once).asnumpy()[:, :3], atol=1e-6)
    # 2 out of 4 in, same weights: the first 2 frames of one pass
    fewer = SimVP(in_frames=4, out_frames=2, frame_shape=(1, 8, 8), **TINY)
    ms.load_param_into_net(fewer, {p.name: p for p in model.get_parameters()}, strict_load=True)
    fewer.set_train(False)
    np.testing.assert_allclose(fewer(x).asnumpy(), once.asnumpy()[:, :2], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(N_T=1), "N_T=1"),
    (dict(N_S=1), "N_S=1"),
    (dict(hid_S=5), "hid_S=5"),
    (dict(attention_kernel=20), "attention_kernel=20"),
    (dict(spatio_kernel_enc=4), "spatio_kernel_enc=4"),
    (dict(patch=0), "patch=0"),
    (dict(frame_shape=(1, 60, 64), N_S=4, patch=2), "divisible by patch * 2**(N_S // 2) = 8"),
])
def test_bad_arguments_fail_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        SimVP(**{**TINY, **kwargs})
    assert "\n" not in str(err.value)


def test_bad_regularisation_arguments():
    with pytest.raises(ValueError, match=re.escape("TAU(alpha=-0.5)")):
        TAU(alpha=-0.5, **TINY)
    with pytest.raises(ValueError, match=re.escape("TAU(ddr_temperature=0)")):
        TAU(ddr_temperature=0, **TINY)


# -- parameter counts -----------------------------------------------------------------------------------------------
def expected_parameters(unit, frames=10, channels=1, hid_S=16, hid_T=128, N_S=4, N_T=4, spatio_kernel_enc=3,
                        spatio_kernel_dec=3, mlp_ratio=4.0, attention_kernel=21, patch=2):
    """Trainable scalars of SimVP / TAU from the architecture (GroupNorm and BatchNorm: a scale and a shift per
    channel; convs and 1x1 convs with bias; the squeeze-and-excitation layers without)."""
    c, hs = channels * patch * patch, hid_S

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def depthwise(dim, k):
        return dim * k * k + dim

    strided = N_S // 2  # encoder blocks 1, 3, ... stride; the decoder upsamples as many times
    encoder = conv(c, hs, spatio_kernel_enc) + (N_S - 1) * conv(hs, hs, spatio_kernel_enc) + N_S * 2 * hs
    decoder = (strided * conv(hs, 4 * hs, spatio_kernel_dec) + (N_S - strided) * conv(hs, hs, spatio_kernel_dec)
               + N_S * 2 * hs + conv(hs, c, 1))
    wide = attention_kernel // 3 if (attention_kernel // 3) % 2 else attention_kernel // 3 - 1

    def block(dim, out):
        hidden = int(dim * mlp_ratio)
        attention = depthwise(dim, 5) + depthwise(dim, wide)  # 5 = 2 * dilation - 1 with dilation 3
        if unit == "gsta":
            attention += conv(dim, 2 * dim, 1)
        else:
            squeezed = max(dim // 16, 4)
            attention += conv(dim, dim, 1) + 2 * dim * squeezed
        mlp = conv(dim, hidden, 1) + depthwise(hidden, 3) + conv(hidden, dim, 1)
        norms_and_scales = 2 * 2 * dim + 2 * dim
        return (2 * conv(dim, dim, 1) + attention + mlp + norms_and_scales
                + (conv(dim, out, 1) if out != dim else 0))

    dims = [frames * hs] + [hid_T] * (N_T - 1) + [frames * hs]
    translator = sum(block(dims[i], dims[i + 1]) for i in range(N_T))
    return encoder + decoder + translator


@pytest.mark.parametrize("arch", [
    {},  # the defaults
    dict(hid_S=8, hid_T=24, N_S=2, N_T=3, patch=2, mlp_ratio=2.0, spatio_kernel_enc=5, attention_kernel=15),
    dict(hid_S=6, hid_T=12, N_S=5, N_T=2, spatio_kernel_dec=5, attention_kernel=9, patch=1, in_frames=4,
         out_frames=6, frame_shape=(3, 32, 32)),
])
def test_parameter_counts(arch):
    frames, channels = arch.get("in_frames", 10), arch.get("frame_shape", (1,))[0]
    layout = {k: v for k, v in arch.items() if k not in ("in_frames", "out_frames", "frame_shape")}
    assert n_params(SimVP(**arch)) == expected_parameters("gsta", frames, channels, **layout)
    assert n_params(TAU(**arch)) == expected_parameters("tau", frames, channels, **layout)


# -- gradients ------------------------------------------------------------------------------------------------------
class Gradients(nn.Cell):
    """Loss of ``training_step`` and its gradient with respect to every trainable parameter."""

    def __init__(self, module):
        super().__init__(auto_prefix=False)
        self.module = module
        self.grad_fn = ms.value_and_grad(self.forward, None, module.trainable_params(), has_aux=True)

    def forward(self, inputs, targets):
        out = self.module.training_step((inputs, targets))
        return out["loss"], out

    def construct(self, inputs, targets):
        (_, out), grads = self.grad_fn(inputs, targets)
        return out, grads


@pytest.mark.parametrize("model_class", [SimVP, TAU])
def test_gradient_reaches_every_parameter(model_class):
    ms.set_seed(0)
    model = model_class(in_frames=4, out_frames=6, frame_shape=(1, 16, 16), loss="l1+l2", **TINY)
    model.set_train(True)
    inputs, targets = random_clip((2, 4, 1, 16, 16), 1), random_clip((2, 6, 1, 16, 16), 2)
    out, grads = Gradients(model)(inputs, targets)
    dead = [p.name for p, g in zip(model.trainable_params(), grads) if not np.any(g.asnumpy() != 0)]
    assert not dead, dead
    assert len(grads) == len(model.trainable_params()) > 40
    out = {k: float(v.asnumpy()) for k, v in out.items()}
    # l1+l2 is mean squared plus mean absolute error; "mse"/"mae" are those summed over the 16x16 pixels; TAU adds
    # its weighted differential divergence (so the gradient checked above includes it)
    extra = out.pop("ddr") if model_class is TAU else 0.0
    assert set(out) == {"loss", "mse", "mae"}
    assert np.isclose(out["loss"], (out["mse"] + out["mae"]) / 256 + extra, rtol=1e-5)
    assert (extra > 0) == (model_class is TAU)


# -- differential divergence ----------------------------------------------------------------------------------------
def ddr_numpy(pred, target, tau=0.1):
    """KL divergence per pixel between softmaxes over time of the frame differences, in float64."""
    def softmax(d):
        e = np.exp(d / tau - (d / tau).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p, q = softmax(np.diff(pred.astype(np.float64), axis=1)), softmax(np.diff(target.astype(np.float64), axis=1))
    return float((p * np.log(p / q)).sum(axis=1).mean())


def test_differential_divergence():
    rng = np.random.default_rng(3)
    target = rng.random((2, 6, 1, 8, 8), dtype=np.float32)
    assert float(differential_divergence(Tensor(target), Tensor(target)).asnumpy()) == 0.0
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    value = float(differential_divergence(Tensor(pred), Tensor(target)).asnumpy())
    assert value > 0 and np.isclose(value, ddr_numpy(pred, target), rtol=1e-4)
    # a different temperature, and a uniformly brighter prediction (same differences) costs nothing
    assert np.isclose(float(differential_divergence(Tensor(pred), Tensor(target), 0.5).asnumpy()),
                      ddr_numpy(pred, target, 0.5), rtol=1e-4)
    assert abs(float(differential_divergence(Tensor(target + 0.25), Tensor(target)).asnumpy())) < 1e-6
    # one frame has no difference
    assert float(differential_divergence(Tensor(pred[:, :1]), Tensor(target[:, :1])).asnumpy()) == 0.0


# -- the configs ----------------------------------------------------------------------------------------------------
def run_module():
    path = Path(__file__).parents[1] / "experiments" / "run.py"
    spec = importlib.util.spec_from_file_location("experiments_run_for_simvp_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, model_class", [("simvp_mnist.yaml", SimVP), ("tau_mnist.yaml", TAU)])
def test_experiment_yamls_resolve(name, model_class, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = run_module()
    assert run.main([name, "--dry-run"]) == 0, capsys.readouterr().err
    ours = yaml.safe_load(capsys.readouterr().out)
    assert run.main(["convlstm_mnist.yaml", "--dry-run"]) == 0
    main_job = yaml.safe_load(capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    # the main job's data and callbacks, so the runs compare; 8 minutes of training bound the wall time (an epoch's
    # length, samples_per_epoch, is the schedule's business: the main job trains one long epoch)
    for data in (ours["data"], main_job["data"]):
        data["init_args"].pop("samples_per_epoch")
    assert ours["data"] == main_job["data"] and ours["callbacks"] == main_job["callbacks"]
    assert ours["trainer"]["max_time"] == "00:00:08:00"
    assert ours["model"]["class_path"] == f"{model_class.__module__}.{model_class.__name__}"
    # the class's defaults (whose parameter counts the YAML comments quote), trained with MSE as the other models
    assert ours["model"]["init_args"] == dict(model_class().hparams, loss="mse", frame_shape=[1, 64, 64])


# -- real Trainer fits (the compiled train step) ---------------------------------------------------------------------
class Squares:
    """Clips of a 3x3 square moving one pixel right and down per frame from a random start: 3 in, 3 out, 12x12."""

    def __init__(self, n=32, seed=0):
        rng = np.random.default_rng(seed)
        video = np.zeros((n, 6, 1, 12, 12), np.float32)
        for i, (y, x) in enumerate(rng.integers(0, 4, size=(n, 2))):
            for t in range(6):
                video[i, t, 0, y + t:y + t + 3, x + t:x + t + 3] = 1.0
        self.video = video

    def __len__(self):
        return len(self.video)

    def __getitem__(self, i):
        return self.video[i, :3], self.video[i, 3:]


class RecordLosses(Callback):
    def __init__(self):
        self.outputs = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.outputs.append(dict(outputs))


def fit(model, root, ckpt_path=None, **trainer_args):
    """Fit on Squares in batches of 8 (4 a epoch), a checkpoint after every step; returns the Trainer and the
    training outputs of each step (Python floats)."""
    record = RecordLosses()
    checkpoints = ModelCheckpoint(dirpath=str(root / "checkpoints"), every_n_train_steps=1, save_last=True)
    trainer = Trainer(enable_progress_bar=False, logger=False, num_sanity_val_steps=0, default_root_dir=str(root),
                      callbacks=[record, checkpoints], **trainer_args)
    trainer.fit(model, train_dataloaders=DataLoader(Squares(), batch_size=8, shuffle=True), ckpt_path=ckpt_path)
    return trainer, record.outputs


def test_trainer_fit_lowers_the_loss(tmp_path):
    ms.set_seed(0)
    model = SimVP(lr=1e-2, in_frames=3, out_frames=3, frame_shape=(1, 12, 12), **TINY)
    losses = [o["loss"] for o in fit(model, tmp_path, max_epochs=3)[1]]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_tau_trains_with_its_regularisation_and_resumes_exactly(tmp_path):
    def tau():
        ms.set_seed(0)
        return TAU(lr=1e-2, in_frames=3, out_frames=3, frame_shape=(1, 12, 12), alpha=1.0, **TINY)

    trainer, outputs = fit(tau(), tmp_path / "whole", max_steps=6)
    assert len(outputs) == 6
    for out in outputs:  # loss = MSE (mean over pixels; "mse" sums the 12x12 of each frame) + alpha * DDR
        assert out["ddr"] > 0 and np.isclose(out["loss"], out["mse"] / 144 + out["ddr"], rtol=1e-4)
    # stopped after 3 steps and resumed from the checkpoint in a new model: the same weights, BatchNorm statistics
    # (updated inside the compiled step) and Adam moments as the uninterrupted run, bit for bit
    fit(tau(), tmp_path / "part", max_steps=3)
    resumed, rest = fit(tau(), tmp_path / "part", ckpt_path=str(tmp_path / "part" / "checkpoints" / "last.ckpt"),
                        max_steps=6)
    assert [o["loss"] for o in rest] == [o["loss"] for o in outputs[3:]]
    whole = {p.name: p.asnumpy() for p in trainer.train_step.get_parameters()}
    again = {p.name: p.asnumpy() for p in resumed.train_step.get_parameters()}
    assert sorted(whole) == sorted(again) and any("moving_mean" in name for name in whole)
    assert not [name for name in whole if not np.array_equal(whole[name], again[name])]
