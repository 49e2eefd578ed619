"""Host-stepped LR schedulers, checked against their closed forms and inside a compiled step."""
import math

import numpy as np
import pytest
from mindspore import nn

from msforge import Module, Trainer
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
