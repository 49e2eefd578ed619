"""Tests of models/base.py: VideoPredictionModule (real MindSpore on tiny shapes, CPU; no torch).

The last test is the issue's acceptance run, as a new user would do it: a model written in a folder outside the repo,
named by class_path in a YAML copied from experiments/convlstm_mnist.yaml, run with experiments/run.py.
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Parameter, Tensor, nn, ops

from models.base import VideoPredictionModule, canonical_loss, loss_terms, per_frame_key, valid_window_mean
from msforge import DataLoader, DataModule, Trainer, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (1, 8, 8)  # (C, H, W) of the tiny clips below


pytestmark = pytest.mark.usefixtures("graph_mode")  # tests/conftest.py


class Scaled(VideoPredictionModule):
    """Predictions = the last input frame times a learnable scale, repeated: a model whose output is known."""

    def __init__(self, scale=0.5, **kwargs):
        super().__init__(**kwargs)
        self.scale = Parameter(Tensor(scale, ms.float32), name="scale")

    def construct(self, inputs):
        return ops.tile(inputs[:, -1:] * self.scale, (1, self.out_frames, 1, 1, 1))


class Regularised(Scaled):
    """Scaled with two extra loss terms from training_forward."""

    def __init__(self, weight=0.25, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def training_forward(self, inputs, targets):
        predictions = self.construct(inputs)
        return predictions, {"energy": self.weight * ops.mean(predictions * predictions),
                             "scale_penalty": self.scale * self.scale}


class CompiledStep(nn.Cell):
    """``training_step`` compiled (graph mode), as the Trainer runs it."""

    def __init__(self, module):
        super().__init__(auto_prefix=False)
        self.module = module

    def construct(self, inputs, targets):
        return self.module.training_step((inputs, targets))


def clips(batch=3, in_frames=2, out_frames=3, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.random((batch, in_frames + out_frames, *SHAPE)).astype(np.float32)
    return video[:, :in_frames], video[:, in_frames:]


def scaled_predictions(inputs, out_frames, scale):
    return np.repeat(inputs[:, -1:] * np.float32(scale), out_frames, axis=1)


# -- loss --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, reference", [
    ("mse", lambda e: np.mean(e ** 2)), ("l2", lambda e: np.mean(e ** 2)),
    ("l1", lambda e: np.mean(np.abs(e))), ("mae", lambda e: np.mean(np.abs(e))),
    ("l1+l2", lambda e: np.mean(e ** 2) + np.mean(np.abs(e))),
    ("mse+mae", lambda e: np.mean(e ** 2) + np.mean(np.abs(e))),
    ({"mse": 1.0, "l1": 0.2}, lambda e: np.mean(e ** 2) + 0.2 * np.mean(np.abs(e))),
    ({"mae": 0.5, "l2": 3}, lambda e: 0.5 * np.mean(np.abs(e)) + 3 * np.mean(e ** 2)),
])
def test_compiled_training_step_loss_and_metrics_match_numpy(loss, reference):
    module = Scaled(scale=0.7, loss=loss, in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips()
    out = CompiledStep(module)(Tensor(inputs), Tensor(targets))
    assert sorted(out) == ["loss", "mae", "mse"]
    err = scaled_predictions(inputs, 3, 0.7).astype(np.float64) - targets
    np.testing.assert_allclose(float(out["loss"].asnumpy()), reference(err), rtol=1e-5)
    # train_mse / train_mae on msforge.metrics' scale (per-frame sums over pixels), comparable with val_mse
    np.testing.assert_allclose(float(out["mse"].asnumpy()), metrics.mse(err, 0 * err), rtol=1e-5)
    np.testing.assert_allclose(float(out["mae"].asnumpy()), metrics.mae(err, 0 * err), rtol=1e-5)


def test_bce_loss_is_the_binary_cross_entropy_of_the_pixels():
    module = Scaled(scale=0.7, loss="bce", in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips()
    out = CompiledStep(module)(Tensor(inputs), Tensor(targets))
    p = np.clip(scaled_predictions(inputs, 3, 0.7).astype(np.float64), 1e-6, 1 - 1e-6)
    reference = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    np.testing.assert_allclose(float(out["loss"].asnumpy()), reference, rtol=1e-4)


@pytest.mark.parametrize("loss, weight_mse, weight_ssim", [("ssim", 0.0, 1.0), ({"mse": 1.0, "ssim": 0.5}, 1.0, 0.5)])
def test_ssim_loss_is_one_minus_the_ssim_metric(loss, weight_mse, weight_ssim):
    module = Scaled(scale=0.7, loss=loss, in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips()
    out = CompiledStep(module)(Tensor(inputs), Tensor(targets))
    pred = scaled_predictions(inputs, 3, 0.7).astype(np.float64)  # in [0, 0.7]: the metric's clipping is a no-op
    reference = weight_mse * np.mean((pred - targets) ** 2) + weight_ssim * (1.0 - metrics.ssim(pred, targets))
    np.testing.assert_allclose(float(out["loss"].asnumpy()), reference, rtol=1e-5)


def test_ssim_loss_gradient_matches_finite_differences_of_the_metric():
    module = Scaled(scale=0.7, loss="ssim", in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips(seed=2)

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.module = module

        def construct(self, x, y):
            return self.module.training_step((x, y))["loss"]

    grads = ops.GradOperation(get_by_list=True)(Loss(), module.trainable_params())(Tensor(inputs), Tensor(targets))
    h = 1e-4
    loss_at = [1.0 - metrics.ssim(scaled_predictions(inputs.astype(np.float64), 3, 0.7 + d), targets)
               for d in (h, -h)]
    np.testing.assert_allclose(float(grads[0].asnumpy()), (loss_at[0] - loss_at[1]) / (2 * h), rtol=1e-3)


@pytest.mark.parametrize("win, channels", [(1, 1), (3, 1), (7, 1), (3, 3)])
def test_valid_window_mean_is_the_mean_of_each_window_inside_the_frame(win, channels):
    # not square: the axes cannot swap; 3 channels: each image's windows stay its own
    a = np.random.default_rng(win).random((2, channels, 9, 12)).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(a.astype(np.float64), (win, win), axis=(2, 3))
    got = valid_window_mean(Tensor(a), win).asnumpy()
    assert got.shape == (2, channels, 10 - win, 13 - win)
    np.testing.assert_allclose(got, windows.mean(axis=(-2, -1)), atol=1e-6)


def test_ssim_loss_on_frames_smaller_than_its_window_is_a_one_line_error():
    with pytest.raises(ValueError) as err:
        Scaled(loss={"mse": 1.0, "ssim": 0.1}, frame_shape=(1, 6, 8))
    assert "(1, 6, 8)" in str(err.value) and "7x7" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["l3", "MSE", "", None, 2])
def test_unknown_loss_is_a_one_line_error_naming_it(bad):
    with pytest.raises(ValueError) as err:
        Scaled(loss=bad)
    message = str(err.value)
    assert repr(bad) in message and "'mse'" in message and "'l1+l2'" in message and "\n" not in message
    assert canonical_loss("mse+mae") == "l1+l2" and canonical_loss("mae") == "l1"


@pytest.mark.parametrize("bad, named", [
    ({}, "{}"), ({"mse": 1.0, "l3": 1.0}, "'l3'"), ({"l1+l2": 1.0}, "'l1+l2'"), ({"mse": 0.0}, "0.0"),
    ({"l1": -1}, "-1"), ({"mse": "1"}, "'1'"), ({"mse": True}, "True"), ({"mse": 1, "l2": 1}, "'l2'"),
])
def test_bad_loss_weights_are_a_one_line_error_naming_the_value(bad, named):
    with pytest.raises(ValueError) as err:
        Scaled(loss=bad)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_loss_weights_keep_the_named_losses_terms():
    # "l1+l2" is the unweighted sum, so its runs (and checkpoints' hparams) keep their meaning
    assert loss_terms("l1+l2") == loss_terms({"mse": 1, "l1": 1}) == (("mse", 1.0), ("l1", 1.0))
    assert loss_terms("mae") == (("l1", 1.0),) and loss_terms({"l2": 0.5}) == (("mse", 0.5),)
    assert Scaled(loss={"mse": 1.0, "l1": 0.2}).hparams["loss"] == {"mse": 1.0, "l1": 0.2}


def test_extra_losses_are_added_to_the_loss_and_returned_for_logging():
    module = Regularised(weight=0.25, scale=0.5, in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips(seed=1)
    out = {k: float(v.asnumpy()) for k, v in CompiledStep(module)(Tensor(inputs), Tensor(targets)).items()}
    assert sorted(out) == ["energy", "loss", "mae", "mse", "scale_penalty"]
    pred = scaled_predictions(inputs, 3, 0.5).astype(np.float64)
    energy = 0.25 * np.mean(pred ** 2)
    np.testing.assert_allclose(out["energy"], energy, rtol=1e-5)
    np.testing.assert_allclose(out["scale_penalty"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(out["loss"], np.mean((pred - targets) ** 2) + energy + 0.25, rtol=1e-5)


def test_an_extra_loss_may_not_take_a_name_of_the_step_outputs():
    class Clash(Scaled):
        def training_forward(self, inputs, targets):
            return self.construct(inputs), {"mse": ops.zeros((), ms.float32)}

    module = Clash(in_frames=2, out_frames=3, frame_shape=SHAPE)
    with pytest.raises(ValueError, match="extra loss named 'mse'; rename it"):  # when the step compiles
        CompiledStep(module)(*(Tensor(x) for x in clips()))


class Clips(DataModule):
    """Tiny random clips: (inputs, targets) of 2 and 3 frames of SHAPE; ``gain`` scales the inputs."""

    def __init__(self, n=8, batch_size=4, gain=1.0):
        inputs, targets = clips(batch=n, seed=2)
        self.samples = list(zip(inputs * np.float32(gain), targets))
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.samples, self.batch_size)

    val_dataloader = test_dataloader = train_dataloader


def test_trainer_logs_extra_losses_and_per_frame_test_mse(tmp_path):
    module = Regularised(scale=0.5, lr=1e-2, in_frames=2, out_frames=3, frame_shape=SHAPE)
    trainer = Trainer(max_epochs=2, default_root_dir=str(tmp_path), enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=Clips())
    logged = trainer.callback_metrics
    for name in ("train_energy", "train_scale_penalty", "train_loss", "val_loss", "val_mse", "val_ssim"):
        assert np.isfinite(logged[name]), name
    # the penalty's gradient reached the scale: it moved from 0.5 (plain MSE on random clips would not shrink it so)
    scale = float(module.scale.asnumpy())
    assert scale != 0.5 and np.isclose(logged["train_scale_penalty"], scale ** 2, rtol=0.2)

    results = trainer.test(module, datamodule=Clips(gain=4.0), verbose=False)[0]  # predictions above 1 too
    inputs, targets = clips(batch=8, seed=2)
    raw = scaled_predictions(inputs * np.float32(4.0), 3, scale)
    pred = np.clip(raw, 0, 1)
    assert not np.array_equal(raw, pred)  # some outputs leave [0, 1]: the two MSE figures differ
    # MSE/MAE of the raw outputs as published tables; SSIM of the clipped frames; the clipped MSE/MAE beside
    curve = metrics.per_frame("mse", raw, targets)
    assert [per_frame_key(k, 3) for k in (1, 2, 3)] == ["test_mse_frame_1", "test_mse_frame_2", "test_mse_frame_3"]
    np.testing.assert_allclose([results[f"test_mse_frame_{k}"] for k in (1, 2, 3)], curve, rtol=1e-5)
    np.testing.assert_allclose(results["test_mse"], curve.mean(), rtol=1e-5)
    np.testing.assert_allclose(results["test_mae"], metrics.mae(raw, targets), rtol=1e-5)
    np.testing.assert_allclose(results["test_mse_clipped"], metrics.mse(pred, targets), rtol=1e-5)
    np.testing.assert_allclose(results["test_mae_clipped"], metrics.mae(pred, targets), rtol=1e-5)
    assert results["test_mse_clipped"] < results["test_mse"]
    np.testing.assert_allclose(results["test_ssim"], metrics.ssim(pred, targets), rtol=1e-5)
    assert per_frame_key(7, 10) == "test_mse_frame_07" and per_frame_key(10, 10) == "test_mse_frame_10"


# -- hyperparameters and arguments ------------------------------------------------------------------------------------
class Level1(Scaled):
    def __init__(self, width=4, *, depth=2, **kwargs):
        super().__init__(**kwargs)
        self.seen_in_init = dict(self.hparams)  # hparams are complete right after super().__init__()


class Level2(Level1):
    def __init__(self, blocks, mode="fast", **kwargs):
        super().__init__(width=2 * blocks, **kwargs)


class Level3(Level2):  # no __init__ of its own
    pass


def test_hparams_hold_the_arguments_of_every_level_of_the_init_chain():
    model = Level3(3, depth=5, lr=0.01, out_frames=4)
    # the call's arguments, then the defaults of a parent's options left out (scale), then the base's; not width:
    # Level2 derives it from blocks
    expected = {"blocks": 3, "mode": "fast", "depth": 5, "lr": 0.01, "out_frames": 4, "scale": 0.5,
                "weight_decay": 0.0, "loss": "mse", "in_frames": 10, "frame_shape": (1, 64, 64)}
    assert dict(model.hparams) == expected and list(model.hparams) == list(expected)
    assert model.seen_in_init == expected
    assert (model.lr, model.out_frames, model.frame_shape) == (0.01, 4, (1, 64, 64))
    # a class built directly records its own arguments, defaults included
    assert dict(Level1(scale=0.1, loss="l1").hparams) == {
        "width": 4, "depth": 2, "scale": 0.1, "loss": "l1", "lr": 1e-3, "weight_decay": 0.0, "in_frames": 10,
        "out_frames": 10, "frame_shape": (1, 64, 64)}


def test_a_model_built_inside_another_keeps_its_own_hparams():
    class Teacher(Scaled):
        def __init__(self, teacher_scale=0.3, **kwargs):
            teacher = Scaled(scale=teacher_scale, lr=5.0)
            super().__init__(**kwargs)
            self.teacher = teacher

    model = Teacher(lr=0.5)
    assert model.hparams["lr"] == 0.5 and model.hparams["teacher_scale"] == 0.3 and "scale" in model.hparams
    assert model.teacher.hparams["lr"] == 5.0 and model.teacher.hparams["scale"] == 0.3


def test_signature_lists_the_base_arguments_for_configs_and_help():
    names = list(inspect.signature(Level3).parameters)
    assert names == ["blocks", "mode", "width", "depth", "scale", "lr", "weight_decay", "loss", "in_frames",
                     "out_frames", "frame_shape", "kwargs"]
    assert inspect.signature(Level3).parameters["lr"].default == 1e-3
    assert inspect.signature(Scaled).parameters["scale"].default == 0.5


def test_unknown_argument_is_a_type_error_with_the_nearest_name():
    with pytest.raises(TypeError, match=r"Level3: unknown argument weight_decy \(did you mean weight_decay\?\)"):
        Level3(2, weight_decy=0.1)
    with pytest.raises(ValueError, match=r"in_frames=0"):
        Scaled(in_frames=0)
    with pytest.raises(ValueError, match=r"frame_shape=\(64, 64\)"):
        Scaled(frame_shape=(64, 64))


# -- host-side steps ---------------------------------------------------------------------------------------------------
def test_split_batch_takes_pairs_or_one_video():
    module = Scaled(in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips()
    video = np.concatenate([inputs, targets], 1)
    for batch in ((inputs, targets), [inputs, targets, "extra"], video, (video,)):
        got_inputs, got_targets = module.split_batch(batch)
        np.testing.assert_array_equal(got_inputs, inputs)
        np.testing.assert_array_equal(got_targets, targets)


def test_batches_of_another_clip_shape_are_a_one_line_error():
    module = Scaled(in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips(in_frames=4)
    with pytest.raises(ValueError, match=r"in_frames=2.*inputs \(3, 4, 1, 8, 8\), expected \(N, 2, 1, 8, 8\)"):
        module.validation_step((inputs, targets), 0)
    with pytest.raises(ValueError, match=r"in_frames=2"):
        module.predict_step((inputs,), 0)


def test_images_for_logging_are_the_first_sequence():
    module = Scaled(scale=0.5, in_frames=2, out_frames=3, frame_shape=SHAPE)
    inputs, targets = clips()
    images = module.images_for_logging((inputs, targets))
    np.testing.assert_array_equal(images["input"], inputs[0])
    np.testing.assert_array_equal(images["target"], targets[0])
    np.testing.assert_allclose(images["prediction"], scaled_predictions(inputs, 3, 0.5)[0], rtol=1e-6)


def test_optimizer_from_lr_weight_decay_and_the_scheduler_hook():
    from msforge.schedulers import StepLR

    optimizer = Scaled(lr=0.02, weight_decay=0.1).configure_optimizers()
    assert isinstance(optimizer, nn.Adam) and np.isclose(float(optimizer.learning_rate.asnumpy()), 0.02)
    assert np.isclose(optimizer.weight_decay, 0.1)

    class WithSchedule(Scaled):
        def lr_scheduler(self, optimizer):
            return StepLR(optimizer, step_size=3)

    config = WithSchedule().configure_optimizers()
    assert isinstance(config["optimizer"], nn.Adam) and isinstance(config["lr_scheduler"], StepLR)


# -- acceptance: a model of one's own, outside the repo ---------------------------------------------------------------
USER_MODEL = '''
"""A tiny per-frame conv net: the input frames stacked as channels -> out_frames frames."""
from mindspore import nn

from models.base import VideoPredictionModule


class TinyNet(VideoPredictionModule):
    def __init__(self, hidden=8, **kwargs):
        super().__init__(**kwargs)
        c = self.frame_shape[0]
        self.net = nn.SequentialCell(nn.Conv2d(self.in_frames * c, hidden, 3, has_bias=True), nn.ReLU(),
                                     nn.Conv2d(hidden, self.out_frames * c, 3, has_bias=True))

    def construct(self, inputs):
        n, t, c, h, w = inputs.shape
        return self.net(inputs.reshape(n, t * c, h, w)).reshape(n, self.out_frames, c, h, w)
'''
SMALL = ["data.init_args.samples_per_epoch=32", "data.init_args.val_size=8", "data.init_args.test_size=8",
         "data.init_args.batch_size=8", "trainer.val_check_interval=0.5", "trainer.max_epochs=1"]


def run_experiment(folder, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell: nothing of the test's
    result = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "run.py"), *args], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_a_model_of_ones_own_trains_tests_logs_images_and_tests_again_from_last(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "mymodel.py").write_text(textwrap.dedent(USER_MODEL))
    config = yaml.safe_load(open(os.path.join(REPO, "experiments", "convlstm_mnist.yaml")))
    config["name"] = "mine"
    config["model"] = {"class_path": "mymodel.TinyNet", "init_args": {"hidden": 6, "lr": 3.0e-3}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    run_experiment(tmp_path, "mine.yaml", *SMALL)
    run_dir = tmp_path / "runs" / "mine" / "version_0"
    first = json.loads((run_dir / "test_metrics.json").read_text())
    assert first["sequences"] == 8 and set(first["model"]) >= {"test_mse", "test_mae", "test_ssim", "test_psnr"}
    assert [k for k in sorted(first["model"]) if k.startswith("test_mse_frame_")] == \
        [f"test_mse_frame_{k:02d}" for k in range(1, 11)]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]
    assert resolved == {"hidden": 6, "lr": 3.0e-3, "weight_decay": 0.0, "loss": "mse", "in_frames": 10,
                        "out_frames": 10, "frame_shape": [1, 64, 64]}
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["hidden"] == 6 and hparams["lr"] == 3.0e-3

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    images = {tag: events.Images(tag) for tag in events.Tags()["images"]}
    assert sorted(images) == ["input", "prediction", "target"]
    # one image per validation run (after steps 2 and 4): the 10 frames of a clip side by side, 2 px apart
    assert [(e.step, e.width, e.height) for e in images["prediction"]] == [(2, 10 * 64 + 9 * 2, 64),
                                                                          (4, 10 * 64 + 9 * 2, 64)]

    again = run_experiment(tmp_path, "mine.yaml", *SMALL, "--stage", "test", "--ckpt", "last")
    assert re.search(r"Test metrics \(last\.ckpt, 8 sequences\)", again.stdout)
    second = json.loads((tmp_path / "runs" / "mine" / "version_1" / "test_metrics.json").read_text())
    # the first run tested the best checkpoint by val_mse; the same weights as last.ckpt when the last validation
    # was the best, as it is here (the loss falls fast on these first steps)
    assert first["checkpoint"].endswith("epoch=0-step=4.ckpt") and second["checkpoint"].endswith("last.ckpt")
    assert second["model"] == first["model"]
