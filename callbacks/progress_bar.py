"""ProgressBar: tqdm bars on a terminal, one plain line per epoch otherwise (CI logs, files, pipes).

On a terminal: a training bar per epoch (batches, it/s, ETA, ``trainer.progress_bar_metrics``) and a transient bar
per validation/test/predict run, its total from the Trainer's ``num_<kind>_batches``. When stdout is not a terminal no
bar is drawn; at each epoch end one line is printed:
``Epoch 2/10: 8 batches in 0.41 s (19.5 it/s), step 24, train_loss=0.0312, val_loss=0.0291``.
"""
import sys
import time

from msforge import Callback


def format_metrics(metrics):
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class ProgressBar(Callback):
    is_progress_bar = True

    def __init__(self, refresh_rate=1):
        self.refresh_rate = max(int(refresh_rate), 1)
        self.tty = None
        self.train_bar = self.eval_bar = None
        self._epoch_start, self._batches = None, 0

    def setup(self, trainer, module, stage):
        self.tty = sys.stdout.isatty()

    def _bar(self, **kwargs):
        from tqdm import tqdm

        return tqdm(file=sys.stdout, dynamic_ncols=True, unit="it", **kwargs)

    # == training =====================================================================================================
    def on_train_epoch_start(self, trainer, module):
        self._epoch_start, self._batches = time.monotonic(), 0
        if self.tty and trainer.is_global_zero:
            total = trainer.num_training_batches
            self.train_bar = self._bar(desc=self._epoch_name(trainer), total=total if total != float("inf") else None,
                                       initial=trainer._batches_done)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._batches += 1
        if self.train_bar is not None and self._batches % self.refresh_rate == 0:
            self.train_bar.set_postfix_str(format_metrics(trainer.progress_bar_metrics), refresh=False)
            self.train_bar.update(self.refresh_rate)

    def on_train_epoch_end(self, trainer, module):
        if self.train_bar is not None:
            self.train_bar.update(self._batches % self.refresh_rate)
            self.train_bar.set_postfix_str(format_metrics(trainer.progress_bar_metrics))
            self.train_bar.close()
            self.train_bar = None
        elif not self.tty and trainer.is_global_zero and self._epoch_start is not None:
            seconds = time.monotonic() - self._epoch_start
            rate = f" ({self._batches / seconds:.1f} it/s)" if seconds > 0 else ""
            note = " (interrupted)" if trainer.interrupted else ""
            metrics = format_metrics(trainer.progress_bar_metrics)
            print(f"{self._epoch_name(trainer)}: {self._batches} batches in {seconds:.2f} s{rate}{note}, "
                  f"step {trainer.global_step}{', ' + metrics if metrics else ''}", flush=True)

    @staticmethod
    def _epoch_name(trainer):
        of = f"/{trainer.max_epochs}" if trainer.max_epochs is not None else ""
        return f"Epoch {trainer.current_epoch}{of}"

    # == validation and test ==========================================================================================
    def _eval_start(self, trainer, desc, counts):
        if self.tty and trainer.is_global_zero:
            total = sum(counts)
            self.eval_bar = self._bar(desc=desc, total=total if total != float("inf") else None, leave=False,
                                      position=1 if self.train_bar is not None else 0)

    def _eval_batch(self):
        if self.eval_bar is not None:
            self.eval_bar.update(1)

    def _eval_end(self, trainer):
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None
        if self.train_bar is not None:
            self.train_bar.set_postfix_str(format_metrics(trainer.progress_bar_metrics))

    def on_validation_start(self, trainer, module):
        if trainer.sanity_checking:
            self._eval_start(trainer, "Sanity check", trainer.num_sanity_val_batches)
        else:
            self._eval_start(trainer, "Validation", trainer.num_val_batches)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._eval_batch()

    def on_validation_end(self, trainer, module):
        self._eval_end(trainer)

    def on_test_start(self, trainer, module):
        self._eval_start(trainer, "Testing", trainer.num_test_batches)

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._eval_batch()

    def on_test_end(self, trainer, module):
        self._eval_end(trainer)

    def on_predict_start(self, trainer, module):
        self._eval_start(trainer, "Predicting", trainer.num_predict_batches)

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._eval_batch()

    def on_predict_end(self, trainer, module):
        self._eval_end(trainer)

    def teardown(self, trainer, module, stage):
        for bar in (self.train_bar, self.eval_bar):
            if bar is not None:
                bar.close()
        self.train_bar = self.eval_bar = None
