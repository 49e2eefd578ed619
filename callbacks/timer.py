"""Timer: wall-clock seconds of training as a logged metric, for learning curves against time.

Logs ``time_train_s`` (seconds since ``fit`` started, validation included, summed over resumed runs) and
``time_val_s`` (seconds spent validating so far) at the global step of each validation, so ``metrics.csv`` and
TensorBoard hold them beside ``val_*``. The elapsed time is saved in checkpoints: a resumed run continues the count
(the restart itself, process start-up and compilation, is not counted).
"""
import time

from msforge import Callback


class Timer(Callback):
    def __init__(self):
        self.carried = 0.0  # seconds of earlier runs, restored from a checkpoint
        self.val_seconds = 0.0
        self._fit_start = self._val_start = None

    def elapsed(self):
        """Seconds of training so far (this run's since fit start, plus the resumed runs')."""
        return self.carried + (time.monotonic() - self._fit_start if self._fit_start is not None else 0.0)

    def on_fit_start(self, trainer, module):
        self._fit_start = time.monotonic()

    def on_validation_start(self, trainer, module):
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer, module):
        if self._val_start is None or trainer.sanity_checking:
            return
        self.val_seconds += time.monotonic() - self._val_start
        trainer.log_metrics({"time_train_s": self.elapsed(), "time_val_s": self.val_seconds})

    def state_dict(self):
        return {"elapsed": self.elapsed(), "val_seconds": self.val_seconds}

    def load_state_dict(self, state):
        self.carried, self.val_seconds = float(state["elapsed"]), float(state["val_seconds"])
