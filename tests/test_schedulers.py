"""Host-stepped LR schedulers, checked against their closed forms and inside a compiled step."""
import math
import time

import numpy as np
import pytest
from mindspore import nn

from msforge import Module, Trainer
from msforge.arguments import MisconfigurationError
from msforge.schedulers import CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, StepLR, get_lrs


def adam(lr=0.1):
    return nn.Adam(nn.Dense(2, 1).trainable_params(), learning_rate=lr)


def run(scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(get_lrs(scheduler.optimizer)[0])
        scheduler.step()
    return lrs


def test_step_lr():
    assert run(StepLR(adam(), step_size=2, gamma=0.5), 5) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_annealing():
    lrs = run(CosineAnnealingLR(adam(), T_max=4, eta_min=0.01), 6)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * min(t, 4) / 4)) / 2 for t in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_one_cycle_warms_up_then_anneals():
    lrs = run(OneCycleLR(adam(), max_lr=1.0, total_steps=10, pct_start=0.3), 10)
    assert lrs[0] == pytest.approx(1 / 25) and max(lrs) == pytest.approx(1.0, rel=1e-6)
    assert int(np.argmax(lrs)) == 2 and lrs[-1] == pytest.approx(1 / 25 / 1e4, rel=1e-4)
    assert all(a <= b for a, b in zip(lrs[:3], lrs[1:3])) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_reduce_on_plateau_and_state_round_trip():
    s = ReduceLROnPlateau(adam(), factor=0.5, patience=1)
    for value in (1.0, 0.9, 0.9, 0.9):
        s.step(value)
    assert get_lrs(s.optimizer) == pytest.approx([0.05])
    restored = ReduceLROnPlateau(adam(), factor=0.5, patience=1)
    restored.load_state_dict(s.state_dict())
    assert get_lrs(restored.optimizer) == pytest.approx([0.05]) and restored.num_bad == s.num_bad
    with pytest.raises(ValueError, match="factor=2"):
        ReduceLROnPlateau(adam(), factor=2)


class Probe(Module):
    """SGD on loss = mean(w . x): every step moves the bias by exactly -lr, so the bias records the lr used."""

    def __init__(self, interval):
        super().__init__()
        self.interval = interval
        self.fc = nn.Dense(2, 1, weight_init="zeros", bias_init="zeros")
        self.biases = []

    def training_step(self, batch):
        return self.fc(batch[0]).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.biases.append(float(self.fc.bias.asnumpy()[0]))

    def configure_optimizers(self):
        opt = nn.SGD(self.trainable_params(), learning_rate=1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 1, gamma=0.5),
                                                   "interval": self.interval}}


@pytest.mark.parametrize("interval, expected", [("step", [1, 0.5, 0.25, 0.125]), ("epoch", [1, 1, 0.5, 0.5])])
def test_scheduler_changes_the_lr_inside_the_compiled_step(interval, expected):
    model = Probe(interval)
    batches = [(np.ones((4, 2), np.float32),)] * 2
    Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        model, train_dataloaders=batches)
    used = -np.diff([0.0] + model.biases)
    assert used == pytest.approx(expected)


def test_one_cycle_over_max_time_follows_the_share_of_time_it_is_given():
    s = OneCycleLR(adam(), max_lr=1.0, total_steps="max_time", pct_start=0.3)
    assert get_lrs(s.optimizer)[0] == pytest.approx(1 / 25)  # no clock yet: the start of the cycle
    share = [0.0]
    s.time_share = lambda: share[0]
    seen = []
    for value in np.linspace(0, 1.2, 25):
        share[0] = float(value)
        s.step()
        seen.append(get_lrs(s.optimizer)[0])
    peak = int(np.argmax(seen))
    assert np.linspace(0, 1.2, 25)[peak] == pytest.approx(0.3) and seen[peak] == pytest.approx(1.0, rel=1e-6)
    assert seen[0] == pytest.approx(1 / 25) and seen[-1] == pytest.approx(1 / 25 / 1e4, rel=1e-4)  # clamped at 1
    assert all(a <= b for a, b in zip(seen[:peak], seen[1:peak + 1]))
    assert all(a >= b for a, b in zip(seen[peak:], seen[peak + 1:]))
    with pytest.raises(ValueError, match="total_steps='forever'"):
        OneCycleLR(adam(), max_lr=1.0, total_steps="forever")


class TimedProbe(Probe):
    """Probe under OneCycleLR over the Trainer's max_time, each batch at least 0.03 s long."""

    def __init__(self):
        super().__init__("step")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        super().on_train_batch_end(outputs, batch, batch_idx)
        time.sleep(0.03)

    def configure_optimizers(self):
        opt = nn.SGD(self.trainable_params(), learning_rate=1.0)
        return {"optimizer": opt, "lr_scheduler": {
            "scheduler": OneCycleLR(opt, max_lr=1.0, total_steps="max_time", pct_start=0.3), "interval": "step"}}


def test_one_cycle_over_max_time_ends_annealed_and_a_resume_goes_on_from_the_checkpoints_time(tmp_path):
    batches = [(np.ones((4, 2), np.float32),)] * 2

    def fit(seconds, start_bias=0.0, **kwargs):
        model = TimedProbe()
        trainer = Trainer(max_epochs=10 ** 6, max_time=seconds, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, num_sanity_val_steps=0)
        trainer.fit(model, train_dataloaders=batches, **kwargs)
        return trainer, -np.diff([start_bias] + model.biases)  # the rate each step used

    first, used = fit(6)  # 1.8 s of warm-up: time enough for the first compile even on a busy machine
    # from max_lr / 25 up through max_lr (at 30% of the time) down to almost nothing when max_time stops the fit
    assert len(used) > 10 and used[0] == pytest.approx(1 / 25, rel=1e-5)
    assert used.max() > 0.9 and used[-1] < 0.1, used
    path = first.save_checkpoint(str(tmp_path / "timed.ckpt"))
    # twice the time: the resumed fit starts half-way through the cycle (annealing from ~0.8), not at its warm-up
    _, resumed = fit(12, start_bias=-used.sum(), ckpt_path=path)
    assert 0.5 < resumed[0] < 0.95 and resumed[-1] < 0.1, resumed
    assert all(a >= b for a, b in zip(resumed, resumed[1:]))
    with pytest.raises(MisconfigurationError, match="max_time"):
        Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
            TimedProbe(), train_dataloaders=batches)
