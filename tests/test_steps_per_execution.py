"""Trainer(steps_per_execution=N): N optimizer steps per compiled call, the same training as one step at a time.

Real MindSpore training of tests/toy.py's module: weights, optimizer moments, logged metrics and the step count after
N=4 are compared with N=1's.
"""
import csv
import glob
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from msforge import Callback, MisconfigurationError
from msforge.schedulers import ReduceLROnPlateau
from toy import ToyModule, loaders, make_module, make_trainer, params_of

pytestmark = pytest.mark.usefixtures("graph_mode")


class DictToy(ToyModule):
    """training_step returns a dict: the loss and the mean absolute error (logged as train_mae)."""

    def training_step(self, batch):
        x, y = batch
        err = self.construct(x) - y
        return {"mae": ops.abs(err).mean(), "loss": (err * err).mean()}


class Calls(Callback):
    def __init__(self):
        self.batch_ends, self.validations = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batch_ends.append((batch_idx, trainer.global_step))

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.validations.append(trainer.global_step)


def fit(root, n, module_cls=ToyModule, module_kwargs=None, ckpt_path=None, **trainer_kwargs):
    ms.set_seed(0)
    module = module_cls(**(module_kwargs or {}))
    calls = Calls()
    settings = dict(steps_per_execution=n, logger=True, enable_checkpointing=False, callbacks=[calls])
    settings.update(trainer_kwargs)
    trainer = make_trainer(root, **settings)
    train, val = loaders(n_train=64, batch_size=4)  # 16 batches an epoch
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer, calls


def logged(trainer):
    with open(glob.glob(os.path.join(trainer.log_dir, "metrics.csv"))[0]) as f:
        return list(csv.DictReader(f))


def assert_same_training(a, b):
    pa, pb = params_of(a), params_of(b)
    assert sorted(pa) == sorted(pb)
    for name in pa:
        np.testing.assert_allclose(pa[name], pb[name], rtol=0, atol=1e-6, err_msg=name)
    assert a.global_step == b.global_step
    rows_a = [r for r in logged(a) if r.get("train_loss")]
    rows_b = [r for r in logged(b) if r.get("train_loss")]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] and rows_a
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            if key.startswith("train_") and ra[key]:
                assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-6), (key, ra["step"])


@pytest.mark.parametrize("case", [
    dict(),
    dict(module_kwargs={"scheduler": "step", "step_size": 3}),  # StepLR every 3 updates: each step's own rate
    dict(accumulate_grad_batches=2),
    dict(module_cls=DictToy, loss_scale="dynamic"),
])
def test_n_steps_per_call_train_exactly_as_one_at_a_time(tmp_path, case):
    one, _ = fit(tmp_path / "one", 1, **case)
    four, calls = fit(tmp_path / "four", 4, **case)
    assert_same_training(one, four)
    if case.get("module_cls") is DictToy:
        assert "train_mae" in logged(four)[0] or any(r.get("train_mae") for r in logged(four))
    # hooks once per execution: the first batch alone, then executions of 4 (batches 1-4, 5-8, 9-12), the last 3
    # batches of the epoch one at a time; the same in epoch 2 from its batch 0
    assert [i for i, _ in calls.batch_ends[:7]] == [0, 4, 8, 12, 13, 14, 15]
    assert [i for i, _ in calls.batch_ends[7:]] == [3, 7, 11, 15]


def test_executions_end_where_validation_is_due_and_at_max_steps(tmp_path):
    one, calls_one = fit(tmp_path / "one", 1, val_check_interval=6, max_steps=27)
    four, calls_four = fit(tmp_path / "four", 4, val_check_interval=6, max_steps=27)
    assert calls_four.validations == calls_one.validations  # after batches 6 and 12, each epoch, and at the end
    assert four.global_step == 27
    assert_same_training(one, four)


def test_resume_from_a_checkpoint_saved_between_executions(tmp_path):
    whole, _ = fit(tmp_path / "whole", 4, max_epochs=2)
    first, _ = fit(tmp_path / "part", 4, max_epochs=1, enable_checkpointing=True)
    resumed, _ = fit(tmp_path / "part", 4, max_epochs=2, ckpt_path="last")
    assert first.global_step == 16
    for name, value in params_of(whole).items():
        np.testing.assert_allclose(params_of(resumed)[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_checkpoint_every_n_train_steps_is_not_skipped_inside_an_execution(tmp_path):
    from callbacks import ModelCheckpoint

    saver = ModelCheckpoint(every_n_train_steps=6, save_top_k=-1, monitor="train_loss")
    trainer, _ = fit(tmp_path, 4, max_epochs=1, enable_checkpointing=True, callbacks=[saver])
    # batch 0 is step 1, executions of batches 1-4, 5-8, 9-12 are steps 2-5, 6-9, 10-13, then 14, 15, 16 one at a
    # time: steps 6 and 12 fall inside executions, saved at the end of the execution holding them
    steps = sorted(int(p.split("step=")[1].split("-")[0].split(".")[0]) for p in saver.best_k_models)
    assert steps == [9, 13], steps


class ManualToy(ToyModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False


class PlateauEveryStep(ToyModule):
    def configure_optimizers(self):
        optimizer = nn.Adam(self.trainable_params(), learning_rate=0.01)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ReduceLROnPlateau(optimizer),
                                                         "interval": "step", "monitor": "train_loss"}}


@pytest.mark.parametrize("module_cls, n, needle", [
    (ToyModule, 0, "steps_per_execution=0"),
    (ManualToy, 4, "steps_per_execution=4 with manual optimization"),
    (PlateauEveryStep, 4, "steps_per_execution=4 with ReduceLROnPlateau stepping every step"),
])
def test_what_cannot_run_in_one_call_is_refused_in_one_line(tmp_path, module_cls, n, needle):
    with pytest.raises(MisconfigurationError) as err:
        fit(tmp_path, n, module_cls=module_cls)
    assert needle in str(err.value) and "\n" not in str(err.value)
