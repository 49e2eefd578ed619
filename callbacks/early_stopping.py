"""EarlyStopping: ask the Trainer to stop when a monitored metric stops improving, is not finite or crosses a threshold.

Arguments and messages as Lightning's. ``evaluate(value) -> (should_stop, reason)`` holds the whole decision (one call =
one validation check, which is what ``patience`` counts) and needs no Trainer. The state (best score, wait count, the
stop and its reason) goes into every checkpoint, so a resumed run keeps counting patience; resuming from a checkpoint
taken after the stop does not train further while the stop condition still holds under the current arguments.
"""
import math
import sys
import warnings

from msforge import Callback, MisconfigurationError


class EarlyStopping(Callback):
    order_dict = {"min": "<", "max": ">"}

    def __init__(self, monitor, min_delta=0.0, patience=3, verbose=False, mode="min", strict=True, check_finite=True,
                 stopping_threshold=None, divergence_threshold=None, check_on_train_epoch_end=None):
        if mode not in self.order_dict:
            raise MisconfigurationError(f"EarlyStopping(mode={mode!r}) is not supported; use 'min' or 'max'")
        if not isinstance(patience, int) or patience < 1:
            raise MisconfigurationError(f"EarlyStopping(patience={patience!r}): use an int >= 1 (validation checks)")
        self.monitor, self.mode, self.patience, self.verbose = monitor, mode, patience, verbose
        self.min_delta = abs(float(min_delta))
        self.strict, self.check_finite = strict, check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self._check_at_epoch_end = check_on_train_epoch_end
        self.best_score = math.inf if mode == "min" else -math.inf
        self.wait_count, self.stopped_epoch, self.last_value, self.stopping_reason = 0, 0, None, None
        self._warned = False

    @property
    def state_key(self):
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def _better(self, a, b):
        return a < b if self.mode == "min" else a > b

    # == the decision =================================================================================================
    def evaluate(self, value):
        """Count one check of ``value``: returns ``(should_stop, reason)`` and updates best score and wait count."""
        value = float(value)
        self.last_value = value
        stop, reason = self._threshold_stop(value)
        if stop:
            return stop, reason
        shifted = value + self.min_delta if self.mode == "min" else value - self.min_delta
        if self._better(shifted, self.best_score):
            old, self.best_score, self.wait_count = self.best_score, value, 0
            gain = f" by {abs(old - value):.6g}" if math.isfinite(old) else ""
            return False, f"Metric {self.monitor} improved{gain}. New best score: {value:.6g}"
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                          f"Best score: {self.best_score:.6g}. Signaling Trainer to stop.")
        return False, f"Metric {self.monitor}={value:.6g} did not improve ({self.wait_count}/{self.patience} checks)"

    def _threshold_stop(self, value):
        """The conditions that stop at once, whatever the patience: non-finite value and the two thresholds."""
        sign = self.order_dict[self.mode]
        if self.check_finite and not math.isfinite(value):
            return True, (f"Monitored metric {self.monitor} = {value} is not finite. Previous best value was "
                          f"{self.best_score:.6g}. Signaling Trainer to stop.")
        if self.stopping_threshold is not None and self._better(value, self.stopping_threshold):
            return True, (f"Stopping threshold reached: {self.monitor} = {value:.6g} {sign} "
                          f"{self.stopping_threshold}. Signaling Trainer to stop.")
        if self.divergence_threshold is not None and self._better(self.divergence_threshold, value):
            return True, (f"Divergence threshold reached: {self.monitor} = {value:.6g} {'><'[sign == '>']} "
                          f"{self.divergence_threshold}. Signaling Trainer to stop.")
        return False, None

    def stop_still_holds(self):
        """After a resume: whether the saved stop still holds under this callback's current arguments."""
        if self.stopping_reason is None:
            return False, "the run had not stopped"
        if self.last_value is not None:
            stop, reason = self._threshold_stop(self.last_value)
            if stop:
                return stop, reason
        if self.wait_count >= self.patience:
            return True, f"{self.wait_count} checks without improvement >= patience={self.patience}"
        return False, "the stop condition no longer holds with the current arguments"

    # == hooks ========================================================================================================
    def setup(self, trainer, module, stage):
        if self.check_on_train_epoch_end is None:  # Lightning's rule: once per epoch -> check after the epoch
            interval = trainer.val_check_interval
            self._check_at_epoch_end = interval in (None, 1.0) and trainer.check_val_every_n_epoch == 1

    def on_validation_end(self, trainer, module):
        if not self._check_at_epoch_end and not trainer.sanity_checking and trainer.state == "fit":
            self._check(trainer)

    def on_train_epoch_end(self, trainer, module):
        if self._check_at_epoch_end and not trainer.interrupted and getattr(trainer, "_epoch_done", True):
            self._check(trainer)

    def on_load_checkpoint(self, trainer, module, checkpoint):
        stop, reason = self.stop_still_holds()
        if stop:
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(f"EarlyStopping: the checkpoint was taken after early stopping ({reason}); not training "
                      "further. Raise patience/thresholds or drop EarlyStopping to continue.", file=sys.stderr)
        else:
            self.stopping_reason = None

    def _check(self, trainer):
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            message = (f"EarlyStopping(monitor={self.monitor!r}) found no {self.monitor!r} among the logged metrics "
                       f"{sorted(metrics)}; log it with self.log({self.monitor!r}, value), change monitor, or pass "
                       "strict=False")
            if self.strict:
                raise MisconfigurationError(message)
            if not self._warned:
                warnings.warn(message, stacklevel=2)
                self._warned = True
            return
        should_stop, reason = self.evaluate(metrics[self.monitor])
        if should_stop:
            self.stopped_epoch, self.stopping_reason = trainer.current_epoch, reason
            trainer.should_stop = True
        if trainer.is_global_zero and (should_stop or self.verbose):
            print(f"EarlyStopping: {reason}", flush=True)

    # == state ========================================================================================================
    def state_dict(self):
        return {"wait_count": self.wait_count, "stopped_epoch": self.stopped_epoch, "best_score": self.best_score,
                "patience": self.patience, "last_value": self.last_value, "stopping_reason": self.stopping_reason}

    def load_state_dict(self, state):
        self.wait_count, self.stopped_epoch = int(state["wait_count"]), int(state["stopped_epoch"])
        self.best_score, self.last_value = float(state["best_score"]), state.get("last_value")
        self.stopping_reason = state.get("stopping_reason")
