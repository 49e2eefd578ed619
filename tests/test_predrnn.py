"""Tests of models/predrnn.py and models/predrnn_v2.py (real MindSpore, CPU, graph mode; no torch).

Shapes, parameter counts against a formula, gradients to every parameter, the sampling schedules against numbers
computed by hand from the papers' formulas, the masks' reproducibility, the decoupling loss on constructed inputs,
and one short Trainer run. The outputs against an independent implementation: bench/twins_predrnn.py.
"""
import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from models.predrnn import PredRNN, sampling_mask, scheduled_sampling_eta
from models.predrnn_v2 import PredRNNv2, decoupling_loss, reverse_sampling_eta
from msforge import Callback, DataLoader, Trainer

SMALL = dict(patch=2, num_layers=2, hidden=8, kernel_size=3, in_frames=3, out_frames=3, frame_shape=(1, 16, 16),
             sampling_max_batch=4)


pytestmark = pytest.mark.usefixtures("graph_mode")  # tests/conftest.py


def n_params(cell):
    return int(sum(np.prod(p.shape) for p in cell.trainable_params()))


def moving_squares(n, frames=6, size=16):
    """A 4x4 square moving diagonally, a different start per video: (n, frames, 1, size, size)."""
    video = np.zeros((n, frames, 1, size, size), np.float32)
    for b in range(n):
        for t in range(frames):
            y, x = (2 * b + t) % (size - 4), (3 * b + t) % (size - 4)
            video[b, t, 0, y:y + 4, x:x + 4] = 1.0
    return video


class FakeTrainer:
    def __init__(self, global_step):
        self.global_step = global_step


# -- architecture ------------------------------------------------------------------------------------------------------
def expected_params(channels, patch, num_layers, hidden, kernel_size, norm, v2=False):
    """Per cell: gate convs x->7H, h->4H, m->3H, [C,M]->H (k x k; a bias each without norm, a norm's scale and shift
    with one), the 1x1 [C,M]->H without bias; then a 1x1 readout to the frame's C*p*p channels with bias; v2 adds
    the HxH 1x1 adapter without bias."""
    frame, k2, h = channels * patch * patch, kernel_size ** 2, hidden
    total = 0
    for layer in range(num_layers):
        x_in = frame if layer == 0 else h
        total += k2 * (x_in * 7 * h + h * 4 * h + h * 3 * h + 2 * h * h) + 2 * h * h
        total += (7 + 4 + 3 + 1) * h * (1 if norm is None else 2)
    total += h * frame + frame
    return total + (h * h if v2 else 0)


@pytest.mark.parametrize("model_class, arch", [
    (PredRNN, dict(patch=4, num_layers=3, hidden=16, kernel_size=5, norm=None, frame_shape=(1, 64, 64))),
    (PredRNN, dict(patch=2, num_layers=2, hidden=8, kernel_size=3, norm="layer", frame_shape=(3, 16, 24))),
    (PredRNNv2, dict(patch=4, num_layers=2, hidden=64, kernel_size=3, norm="group", frame_shape=(1, 64, 64))),
    (PredRNNv2, dict(patch=1, num_layers=1, hidden=4, kernel_size=1, norm=None, frame_shape=(2, 8, 8),
                     decouple_beta=0.0)),  # no decoupling loss: no adapter
])
def test_parameter_count_matches_the_formula(model_class, arch):
    model = model_class(**arch)
    v2 = model_class is PredRNNv2 and arch.get("decouple_beta", 0.1) > 0
    expected = expected_params(arch["frame_shape"][0], arch["patch"], arch["num_layers"], arch["hidden"],
                               arch["kernel_size"], arch["norm"], v2)
    assert n_params(model) == expected
    # the mask Parameter is state, not a weight: Adam does not see it
    assert not model.sampling_mask.requires_grad
    assert model.sampling_mask.name not in [p.name for p in model.configure_optimizers().parameters]


def test_output_shapes_and_bad_arguments():
    x = Tensor(moving_squares(2)[:, :3])
    for model_class in (PredRNN, PredRNNv2):
        model = model_class(**dict(SMALL, out_frames=5))
        assert model(x).shape == (2, 5, 1, 16, 16)
    # the mask columns: forecast steps 2..out (PredRNN, v2 without reverse), plus input frames 2..in (v2 reverse)
    assert PredRNN(**SMALL).sampling_mask.shape == (4, 2, 1, 1, 1)
    assert PredRNNv2(**SMALL).sampling_mask.shape == (4, 4, 1, 1, 1)
    assert PredRNNv2(reverse_scheduled_sampling=False, **SMALL).sampling_mask.shape == (4, 2, 1, 1, 1)
    with pytest.raises(ValueError, match=r"patch=3.*not divisible"):
        PredRNN(patch=3)
    with pytest.raises(ValueError, match=r"kernel_size=4"):
        PredRNN(kernel_size=4)
    with pytest.raises(ValueError, match=r"norm='batch'"):
        PredRNN(norm="batch")
    with pytest.raises(ValueError, match=r"sampling_start_value=1.5"):
        PredRNN(sampling_start_value=1.5)
    with pytest.raises(ValueError, match=r"reverse_schedule='cosine'"):
        PredRNNv2(reverse_schedule="cosine")
    with pytest.raises(ValueError, match=r"r_sampling_start_iter=10, r_sampling_stop_iter=10"):
        PredRNNv2(r_sampling_start_iter=10, r_sampling_stop_iter=10)


class LossAndGrads(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model
        self.grad = ms.value_and_grad(self.loss, None, model.trainable_params(), has_aux=True)

    def loss(self, inputs, targets):
        out = self.model.training_step((inputs, targets))
        return out["loss"], out["context"], out["decouple"]

    def construct(self, inputs, targets):
        (loss, context, decouple), grads = self.grad(inputs, targets)
        return loss, context, decouple, grads


def test_gradient_reaches_every_parameter():
    """PredRNN-v2 with group norm, reverse scheduled sampling, the context and decoupling losses: every weight of
    the cell (PredRNN's), the readout and the adapter gets a gradient."""
    ms.set_seed(0)
    model = PredRNNv2(norm="group", **SMALL)
    model.trainer = FakeTrainer(global_step=3)
    video = moving_squares(4)
    batch = (Tensor(video[:, :3]), Tensor(video[:, 3:]))
    model.on_train_batch_start(batch, 0)  # input columns at p=0.5: some inputs are the model's own predictions
    loss, context, decouple, grads = LossAndGrads(model)(*batch)
    assert float(context) > 0 and float(decouple) > 0 and float(loss) > float(context) + float(decouple)
    names = [p.name for p in model.trainable_params()]
    zero = [name for name, g in zip(names, grads) if not np.abs(g.asnumpy()).sum() > 0]
    assert not zero, zero
    assert any("adapter" in name for name in names) and any("norm_o" in name for name in names)


# -- schedules and masks -----------------------------------------------------------------------------------------------
def test_scheduled_sampling_schedule():
    # the PredRNN code's defaults: 1.0 falling by 2e-5 a step until step 50,000
    args = dict(start_value=1.0, stop_iter=50000, changing_rate=2e-5)
    assert scheduled_sampling_eta(0, **args) == 1.0
    assert scheduled_sampling_eta(1000, **args) == pytest.approx(0.98)
    assert scheduled_sampling_eta(25000, **args) == pytest.approx(0.5)
    assert scheduled_sampling_eta(49999, **args) == pytest.approx(2e-5)
    assert scheduled_sampling_eta(50000, **args) == 0.0
    # default rate: start / stop_iter, i.e. 0.8 -> 0 over 100 steps
    assert scheduled_sampling_eta(50, start_value=0.8, stop_iter=100) == pytest.approx(0.4)
    assert scheduled_sampling_eta(99, start_value=0.8, stop_iter=100) == pytest.approx(0.008)
    # a fast rate is floored at 0 before stop_iter
    assert scheduled_sampling_eta(20, start_value=1.0, stop_iter=100, changing_rate=0.1) == 0.0


def test_reverse_scheduled_sampling_schedule():
    """TPAMI 2022: input frames read the truth with probability rising 0.5 -> 1, forecast steps falling 0.5 -> 0,
    over [start, stop); here start 25,000, stop 50,000, alpha 5,000 (the paper's code's defaults)."""
    args = dict(start_iter=25000, stop_iter=50000, alpha=5000)
    assert reverse_sampling_eta(0, **args) == (0.5, 0.5)
    assert reverse_sampling_eta(24999, **args) == (0.5, 0.5)
    assert reverse_sampling_eta(25000, **args) == pytest.approx((0.5, 0.5))
    # k = 5,000 steps in: 1 - 0.5 e^-1 = 0.816060, forecast 0.5 - 0.5 * 5,000 / 25,000 = 0.4
    assert reverse_sampling_eta(30000, **args) == pytest.approx((0.8160603, 0.4))
    # k = 20,000: 1 - 0.5 e^-4 = 0.990842, forecast 0.1
    assert reverse_sampling_eta(45000, **args) == pytest.approx((0.9908422, 0.1))
    assert reverse_sampling_eta(50000, **args) == (1.0, 0.0)
    # sigmoid: 0.75 at the window's middle; 0.5 + 0.5 / (1 + e^-1) = 0.865529 alpha steps later; linear: 0.75
    assert reverse_sampling_eta(37500, kind="sigmoid", **args) == pytest.approx((0.75, 0.25))
    assert reverse_sampling_eta(42500, kind="sigmoid", **args)[0] == pytest.approx(0.8655293)
    assert reverse_sampling_eta(37500, kind="linear", **args) == pytest.approx((0.75, 0.25))


def test_mask_is_a_function_of_seed_and_step():
    probabilities = [0.3] * 5 + [1.0, 0.0]
    first = sampling_mask(7, 120, 4000, probabilities)
    assert first.shape == (4000, 7, 1, 1, 1) and first.dtype == np.float32
    np.testing.assert_array_equal(first, sampling_mask(7, 120, 4000, probabilities))
    assert not np.array_equal(first, sampling_mask(7, 121, 4000, probabilities))
    assert not np.array_equal(first, sampling_mask(8, 120, 4000, probabilities))
    flips = first[..., 0, 0, 0]
    assert set(np.unique(flips)) == {0.0, 1.0}
    assert abs(flips[:, :5].mean() - 0.3) < 0.02  # 20,000 draws at p = 0.3
    assert flips[:, 5].all() and not flips[:, 6].any()


def test_on_train_batch_start_writes_the_steps_mask():
    video = moving_squares(3)
    batch = (Tensor(video[:, :3]), Tensor(video[:, 3:]))
    model = PredRNNv2(r_sampling_start_iter=10, r_sampling_stop_iter=30, r_exp_alpha=5.0, sampling_seed=5, **SMALL)
    model.trainer = FakeTrainer(global_step=15)
    model.on_train_batch_start(batch, 0)
    input_eta, forecast_eta = reverse_sampling_eta(15, 10, 30, 5.0)
    assert input_eta == pytest.approx(1 - 0.5 * math.exp(-1)) and forecast_eta == pytest.approx(0.375)
    expected = sampling_mask(5, 15, 4, [input_eta] * 2 + [forecast_eta] * 2)
    np.testing.assert_array_equal(model.sampling_mask.asnumpy(), expected)

    model = PredRNN(sampling_stop_iter=10, sampling_seed=5, **SMALL)  # 1.0 falling by 0.1 a step
    model.trainer = FakeTrainer(global_step=4)
    model.on_train_batch_start(batch, 0)
    np.testing.assert_array_equal(model.sampling_mask.asnumpy(), sampling_mask(5, 4, 4, [0.6, 0.6]))
    with pytest.raises(ValueError, match=r"sampling_max_batch=4\): the training batch has 5 videos"):
        model.on_train_batch_start((Tensor(moving_squares(5)[:, :3]), None), 1)


def test_decoupling_loss_on_constructed_increments():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    assert float(decoupling_loss(Tensor(a), Tensor(a))) == pytest.approx(1.0, abs=1e-6)
    assert float(decoupling_loss(Tensor(a), Tensor(-2 * a))) == pytest.approx(1.0, abs=1e-6)  # |cos|, scale-free
    checker = np.indices((4, 4)).sum(0) % 2  # two patterns with disjoint support: orthogonal
    c = np.broadcast_to(checker, (2, 3, 4, 4)).astype(np.float32)
    assert float(decoupling_loss(Tensor(c), Tensor(1 - c))) == 0.0
    assert float(decoupling_loss(Tensor(np.zeros_like(a)), Tensor(a))) == 0.0  # no increment: no penalty
    # per (video, channel): cos between (1, 0, 0, 0) and (1, 1, 0, 0) is 1/sqrt(2); between (1, 0, 0, 0) and
    # (0, 1, 0, 0) it is 0: the mean of the two channels is 1/(2 sqrt 2)
    x = np.zeros((1, 2, 2, 2), np.float32)
    y = np.zeros((1, 2, 2, 2), np.float32)
    x[0, :, 0, 0] = 1
    y[0, 0, 0, :] = 1
    y[0, 1, 0, 1] = 1
    assert float(decoupling_loss(Tensor(x), Tensor(y))) == pytest.approx(1 / (2 * math.sqrt(2)), rel=1e-6)


# -- training ----------------------------------------------------------------------------------------------------------
class Squares:
    def __init__(self, n):
        self.video = moving_squares(n)

    def __len__(self):
        return len(self.video)

    def __getitem__(self, i):
        return self.video[i, :3], self.video[i, 3:]


class RecordLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"])


def test_trainer_fit_lowers_the_loss(tmp_path):
    """A real fit in graph mode: the host writes each step's mask into the compiled step, the loss goes down."""
    ms.set_seed(0)
    model = PredRNN(lr=1e-2, sampling_stop_iter=30, sampling_seed=3, **SMALL)
    record = RecordLosses()
    trainer = Trainer(max_steps=16, log_every_n_steps=1, enable_progress_bar=False, default_root_dir=str(tmp_path),
                      num_sanity_val_steps=0, enable_checkpointing=False, logger=False, callbacks=[record])
    trainer.fit(model, train_dataloaders=DataLoader(Squares(16), 4, shuffle=True, seed=1))
    losses = record.losses
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:2]), losses
    # the last step ran with the mask of (seed, step 15); its forecast steps read the truth with p = 1 - 15/30
    np.testing.assert_array_equal(model.sampling_mask.asnumpy(), sampling_mask(3, 15, 4, [0.5, 0.5]))
    assert "train_context" in trainer.callback_metrics


def test_resume_draws_the_same_masks_and_ends_bit_identical(tmp_path):
    """PredRNN-v2 with both masks random: 4 steps straight, and a fresh model and Trainer resumed from the step-2
    checkpoint (mid-epoch) for 2 more, end with the same weights (the masks depend only on seed and global step)."""
    from callbacks import ModelCheckpoint

    def fit(root, ckpt_path=None):
        ms.set_seed(0)
        model = PredRNNv2(lr=1e-2, r_sampling_start_iter=0, r_sampling_stop_iter=8, r_exp_alpha=2.0,
                          sampling_seed=3, **SMALL)
        saver = ModelCheckpoint(dirpath=str(root), filename="{step}", every_n_train_steps=1, save_top_k=-1)
        trainer = Trainer(max_steps=4, enable_progress_bar=False, default_root_dir=str(root), logger=False,
                          num_sanity_val_steps=0, callbacks=[saver])
        trainer.fit(model, train_dataloaders=DataLoader(Squares(12), 4, shuffle=True, seed=1), ckpt_path=ckpt_path)
        assert trainer.global_step == 4
        return {p.name: p.asnumpy().copy() for p in model.get_parameters()}

    straight = fit(tmp_path / "straight")
    resumed = fit(tmp_path / "resumed", ckpt_path=str(tmp_path / "straight" / "step=2.ckpt"))
    assert sorted(straight) == sorted(resumed)
    differing = [name for name in straight if not np.array_equal(straight[name], resumed[name])]
    assert not differing, differing
