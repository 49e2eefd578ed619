"""When the Trainer reads a training step's outputs back to the host (issue 15, item 3): at a step log, a validation,
a checkpoint, the epoch end or a read of the metrics, not after every step; and what a run records is the same as
when every step is read at once. Real MindSpore training of the toy module (CPU, graph mode)."""
import math
import os

from toy import loaders, make_module, make_trainer, params_of  # noqa: I001  (puts this checkout first, msforge first)

import numpy as np

from callbacks import ModelCheckpoint
from msforge import Callback
from msforge import checkpoint as ckpt_io
from test_failures import Batches


class Record(Callback):
    """At each batch end: how many steps are still unread and the outputs given (not looked at here, so a step's
    outputs are read up to a log interval later); every logging event."""

    def __init__(self, read_every_step=False):
        self.read_every_step = read_every_step
        self.unread, self.outputs, self.logged = [], [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.read_every_step:  # as a progress bar on a terminal does
            trainer.callback_metrics
        self.unread.append(len(trainer._pending_steps))
        self.outputs.append(outputs)

    def on_log_metrics(self, trainer, module, metrics, step):
        self.logged.append((step, without_times(metrics)))


def without_times(metrics):
    return {k: v for k, v in metrics.items() if k not in ("epoch_time", "throughput")}


def fit(root, read_every_step):
    record = Record(read_every_step)
    trainer = make_trainer(root, log_every_n_steps=4, callbacks=[record], logger=False, enable_checkpointing=False)
    train, val = loaders()  # 8 batches an epoch, 2 epochs, validation at each epoch end
    trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    return trainer, record


def test_steps_are_read_back_at_log_steps_and_the_run_records_what_reading_every_step_records(tmp_path):
    trainer, record = fit(tmp_path / "deferred", read_every_step=False)
    # the first step is read at once (a bad output fails there), then the steps wait for the next log step (every 4)
    assert record.unread == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0]
    eager, eager_record = fit(tmp_path / "eager", read_every_step=True)
    assert eager_record.unread == [0] * 16
    losses = [out["loss"] for out in record.outputs]
    assert all(isinstance(loss, float) for loss in losses) and len(set(losses)) == 16
    assert losses == [out["loss"] for out in eager_record.outputs]  # read late, each still its own step's value
    assert record.logged == eager_record.logged  # step logs, epoch means and validation, at the same steps
    assert [s for s, m in record.logged if "train_loss" in m] == [4, 8, 12, 16]
    assert without_times(trainer.callback_metrics) == without_times(eager.callback_metrics)
    want, got = params_of(eager), params_of(trainer)
    assert not [name for name in want if not np.array_equal(want[name], got[name])]


def test_a_nan_loss_nobody_reads_stops_the_run_at_the_next_log_step_and_names_its_step(tmp_path, capsys):
    checkpoint = ModelCheckpoint(save_last=True)  # saves at epoch ends only
    trainer = make_trainer(tmp_path, max_epochs=3, log_every_n_steps=3, callbacks=[checkpoint])
    # 4 batches an epoch: step 5 is epoch 1's first batch; steps are next read at the log step 6
    trainer.fit(make_module(), train_dataloaders=Batches(poison={(1, 0): ("x", math.nan)}),
                val_dataloaders=loaders()[1])
    reason = "training loss is nan at global step 5 (epoch 1, batch 0)"
    assert trainer.stop_reason == reason and reason in capsys.readouterr().err
    assert trainer.diverged and trainer.global_step == 6 and trainer.current_epoch == 1
    assert math.isnan(trainer.callback_metrics["train_loss"])
    folder = os.path.dirname(checkpoint.last_model_path)
    assert sorted(os.listdir(folder)) == ["epoch=0-step=4.ckpt", "last.ckpt"]  # nothing after the NaN
    assert ckpt_io.load(os.path.join(folder, "last.ckpt"))[1]["global_step"] == 4


def test_loss_scaling_counts_the_skipped_steps_it_had_not_read(tmp_path):
    record = Record()
    trainer = make_trainer(tmp_path, max_epochs=2, loss_scale="dynamic", log_every_n_steps=50, callbacks=[record],
                           logger=False, enable_checkpointing=False)
    inf = {(e, b): ("y", math.inf) for e in (0, 1) for b in (1, 3)}  # steps 2, 4, 6, 8 overflow
    trainer.fit(make_module(), train_dataloaders=Batches(poison=inf), val_dataloaders=loaders()[1])
    assert record.unread == [0, 1, 2, 3, 1, 2, 3, 4]  # read at each epoch end only (and the first step)
    assert trainer.global_step == 8 and trainer.skipped_steps == 4 and not trainer.diverged
    assert trainer.loss_scale_value == 2.0**16 / 2**4  # halved at each overflow
