"""ModelCheckpoint: decides when to save and which files to keep; ``trainer.save_checkpoint`` writes (atomically).

When, with Lightning's arguments (``every_n_train_steps``, ``train_time_interval``, ``every_n_epochs`` are mutually
exclusive; none given = every epoch):
- step triggers at ``on_train_batch_end`` of update batches; when a mid-epoch validation follows that batch
  (``val_check_interval``) the save waits for its ``on_validation_end``, so the file includes that validation;
- epoch triggers at ``on_validation_end`` of a mid-epoch validation, else at ``on_train_epoch_end`` (after the epoch's
  validation and scheduler step): a checkpoint is always taken at a point the resumed run continues from exactly;
- never during the sanity check, at most once per global step, and not after a SIGTERM/SIGINT (``save_last_now``);
- never once the run has diverged (``trainer.checkpoint_allowed()``: a NaN/inf loss, or weights found non-finite).
Top-k deletion happens only after the new file is in place, and only of files in this run's ``dirpath``.
"""
import datetime
import math
import os
import re
import sys
import time
import warnings

from msforge import Callback, MisconfigurationError


class ModelCheckpoint(Callback):
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    order = 100  # after EarlyStopping & co., so the files hold their updated state

    def __init__(self, dirpath=None, filename=None, monitor=None, verbose=False, save_last=None, save_top_k=1,
                 save_weights_only=False, mode="min", auto_insert_metric_name=True, every_n_train_steps=None,
                 train_time_interval=None, every_n_epochs=None, save_on_exception=False):
        if mode not in ("min", "max"):
            raise MisconfigurationError(f"ModelCheckpoint(mode={mode!r}) is not supported; use 'min' or 'max'")
        if not isinstance(save_top_k, int) or save_top_k < -1:
            raise MisconfigurationError(f"ModelCheckpoint(save_top_k={save_top_k!r}): use -1 (keep all), 0 or k > 0")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationError(f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None): without a monitor "
                                        "checkpoints cannot be ranked; use save_top_k in (-1, 0, 1) or set monitor")
        for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise MisconfigurationError(f"ModelCheckpoint({name}={value!r}): use an int >= 0")
        if isinstance(train_time_interval, (int, float)) and not isinstance(train_time_interval, bool):
            train_time_interval = datetime.timedelta(seconds=train_time_interval)
        if train_time_interval is not None and not isinstance(train_time_interval, datetime.timedelta):
            raise MisconfigurationError(f"ModelCheckpoint(train_time_interval={train_time_interval!r}): use a "
                                        "datetime.timedelta or seconds")
        if sum(bool(v) for v in (every_n_train_steps, every_n_epochs, train_time_interval)) > 1:
            raise MisconfigurationError(
                f"ModelCheckpoint(every_n_train_steps={every_n_train_steps}, every_n_epochs={every_n_epochs}, "
                f"train_time_interval={train_time_interval}): give only one of them")
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1
        self._dirpath_arg = os.path.abspath(dirpath) if dirpath else None
        self.dirpath = self._dirpath_arg
        self.filename, self.monitor, self.verbose, self.mode = filename, monitor, verbose, mode
        self.save_last, self.save_top_k, self.save_weights_only = save_last, save_top_k, save_weights_only
        self.auto_insert_metric_name, self.save_on_exception = auto_insert_metric_name, save_on_exception
        self.every_n_train_steps, self.every_n_epochs = every_n_train_steps or 0, every_n_epochs or 0
        self.train_time_interval = train_time_interval
        # state (saved in every checkpoint)
        self.best_k_models, self.best_model_path, self.best_model_score = {}, "", None
        self.last_model_path, self.current_score = "", None
        # run-local bookkeeping (never saved: a resumed run may save again at its first step)
        self._last_global_step_saved, self._last_time_checked = -1, None
        self._step_before, self._pending, self._validation_ran, self._warned = None, False, False, False

    @property
    def state_key(self):
        return (f"ModelCheckpoint{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}, 'every_n_train_steps': "
                f"{self.every_n_train_steps}, 'every_n_epochs': {self.every_n_epochs}, 'train_time_interval': "
                f"{self.train_time_interval}}}")

    # == decisions (pure; testable without a Trainer) ================================================================
    def step_save_due(self, global_step, made_update, seconds_since_last, step_before=None):
        """``step_before``: the step before the batch (or execution of several steps) that just ended."""
        if not made_update:
            return False, "this batch made no optimizer update"
        every = self.every_n_train_steps
        before = global_step - 1 if step_before is None else step_before
        if every and global_step // every > before // every:  # a multiple was reached (several steps per execution)
            return True, f"step {global_step // every * every} is a multiple of every_n_train_steps={every}"
        interval = self.train_time_interval
        if interval is not None and seconds_since_last is not None and seconds_since_last >= interval.total_seconds():
            return True, f"{seconds_since_last:.1f} s since the last time check (train_time_interval={interval})"
        return False, "no step or time trigger is due"

    def epoch_save_due(self, epoch):
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            return True, f"epoch {epoch} completes every_n_epochs={self.every_n_epochs}"
        return False, "no epoch trigger is due"

    def top_k_decision(self, current):
        """Whether a checkpoint scoring ``current`` enters the top k; returns ``(decision, reason)``."""
        if self.save_top_k == 0:
            return False, "save_top_k=0 keeps no ranked checkpoints"
        current = self._worst_if_nan(current)
        if self.save_top_k == -1:
            return True, "save_top_k=-1 keeps every checkpoint"
        if len(self.best_k_models) < self.save_top_k:
            return True, f"fewer than save_top_k={self.save_top_k} checkpoints kept so far"
        kth = self.best_k_models[self._kth_path()]
        better = current < kth if self.mode == "min" else current > kth
        verdict = "better" if better else "not better"
        return better, f"{self.monitor}={current:.6g} is {verdict} than the worst kept ({kth:.6g})"

    # == hooks ========================================================================================================
    def setup(self, trainer, module, stage):
        if stage == "fit":
            self.dirpath = self._dirpath_arg  # resolved in on_fit_start: a failed resume must not create the run folder

    def on_fit_start(self, trainer, module):
        self.dirpath = self._dirpath_arg or os.path.join(trainer.log_dir, "checkpoints")
        self._last_global_step_saved, self._pending, self._validation_ran = -1, False, False

    def on_train_start(self, trainer, module):
        self._last_time_checked = time.monotonic()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._pending:  # the mid-epoch validation did not come (no val data): save the state of that step now
            self._pending = False
            self._save_topk_and_last(trainer)
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.monotonic()
        since = None if self._last_time_checked is None else now - self._last_time_checked
        due, _ = self.step_save_due(trainer.global_step, trainer.global_step != self._step_before, since,
                                    self._step_before)
        if not due:
            return
        if self.train_time_interval is not None:
            self._last_time_checked = now
        check = getattr(trainer, "_val_due_after", None)
        if trainer.val_check_interval is not None and check and check(batch_idx, trainer.num_training_batches):
            self._pending = True
        else:
            self._save_topk_and_last(trainer)

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or trainer.state != "fit":
            return
        self._validation_ran = True
        if trainer._batches_done >= trainer.num_training_batches:
            return  # the epoch-end validation: saved at on_train_epoch_end, after the epoch's scheduler step
        due = self._pending or self.epoch_save_due(trainer.current_epoch)[0]
        self._pending = False
        if due:
            self._save_topk_and_last(trainer)

    def on_train_epoch_end(self, trainer, module):
        if trainer.interrupted:
            return  # save_last_now has saved the state to resume from; this epoch did not finish
        due = self._pending or self.epoch_save_due(trainer.current_epoch)[0]
        self._pending = False
        if due:
            self._save_topk_and_last(trainer)

    def on_exception(self, trainer, module, exception):
        if (self.save_on_exception and trainer.state == "fit" and self.dirpath and not trainer.interrupted
                and trainer.checkpoint_allowed()):
            name = self.format_checkpoint_name(self._candidates(trainer), prefix="exception")
            path = trainer.save_checkpoint(os.path.join(self.dirpath, name), weights_only=False)
            print(f"ModelCheckpoint: {type(exception).__name__} raised; state saved to {path}", file=sys.stderr)

    def save_last_now(self, trainer):
        """Save a resumable ``last.ckpt`` now (SIGTERM/SIGINT); returns its path."""
        if (self.save_last and not self.save_weights_only and not self._pending and self.last_model_path
                and self._last_global_step_saved == trainer.global_step and os.path.isfile(self.last_model_path)):
            return self.last_model_path
        self._pending = False
        if not trainer.checkpoint_allowed():  # diverged: the last good file is the one to resume from
            return self.last_model_path
        return self._save_last(trainer, self._candidates(trainer), weights_only=False)

    # == saving =======================================================================================================
    def _candidates(self, trainer):
        return {**trainer.callback_metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}

    def _save_topk_and_last(self, trainer):
        if trainer.global_step == self._last_global_step_saved:
            return
        if not trainer.checkpoint_allowed():  # NaN/inf loss or weights: never overwrite the last good checkpoints
            return
        candidates = self._candidates(trainer)
        if self.save_top_k != 0:
            if self.monitor is None:
                self._save_unranked(trainer, candidates)
            elif self.monitor in candidates:
                self._save_ranked(trainer, candidates)
            else:
                self._missing_monitor(trainer)
        if self.save_last:
            self._save_last(trainer, candidates, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step

    def _save_unranked(self, trainer, candidates):
        previous = self.best_model_path
        replaced = previous if self.save_top_k == 1 else None
        self.best_model_path = self._free_path(self.format_checkpoint_name(candidates), replaced)
        self._write(trainer, self.best_model_path, self.save_weights_only)
        if self.save_top_k == 1 and previous and previous != self.best_model_path:
            self._remove(trainer, previous)

    def _save_ranked(self, trainer, candidates):
        current = float(candidates[self.monitor])
        better, reason = self.top_k_decision(current)
        if not better:
            if self.verbose:
                print(f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {reason}; not saved")
            return
        dropped = None
        if self.save_top_k > 0 and len(self.best_k_models) >= self.save_top_k:
            dropped = self._kth_path()
            self.best_k_models.pop(dropped)
        path = self._free_path(self.format_checkpoint_name(candidates), dropped)
        self.current_score = self._worst_if_nan(current)
        self.best_k_models[path] = self.current_score
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            print(f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {reason}; saving {path}")
        self._write(trainer, path, self.save_weights_only)
        if dropped and dropped != path:
            self._remove(trainer, dropped)

    def _save_last(self, trainer, candidates, weights_only):
        previous = self.last_model_path
        self.last_model_path = os.path.join(self.dirpath, self.format_checkpoint_name(
            candidates, filename=self.CHECKPOINT_NAME_LAST, auto_insert=False))
        self._write(trainer, self.last_model_path, weights_only)
        if previous and previous != self.last_model_path:
            self._remove(trainer, previous)
        return self.last_model_path

    def _write(self, trainer, path, weights_only):
        trainer.save_checkpoint(path, weights_only=weights_only)
        self._last_global_step_saved = trainer.global_step

    def _remove(self, trainer, path):
        """Delete a file dropped from the top k, only if it is in this run's folder (never an earlier run's)."""
        if trainer.is_global_zero and os.path.dirname(os.path.abspath(path)) == self.dirpath and os.path.isfile(path):
            os.remove(path)

    def _missing_monitor(self, trainer):
        message = (f"ModelCheckpoint(monitor={self.monitor!r}) found no {self.monitor!r} among the logged metrics "
                   f"{sorted(trainer.callback_metrics)}; log it with self.log({self.monitor!r}, value) or change "
                   "monitor")
        if self._validation_ran:
            raise MisconfigurationError(message)
        if not self._warned:
            warnings.warn(message + " (no validation has run yet, so no ranked checkpoint is saved)", stacklevel=2)
            self._warned = True

    # == names ========================================================================================================
    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix="", auto_insert=None):
        """Lightning's naming: "{epoch}-{val_loss:.2f}" -> "epoch=3-val_loss=0.12.ckpt" (missing keys format as 0)."""
        template = filename or self.filename or "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        auto_insert = self.auto_insert_metric_name if auto_insert is None else auto_insert
        values = dict(metrics)
        for group in sorted(re.findall(r"(\{.*?)[:\}]", template), key=len, reverse=True):
            name = group[1:]
            if auto_insert:
                template = template.replace(group, name + self.CHECKPOINT_EQUALS_CHAR + "{" + name)
            template = template.replace(group, f"{{0[{name}]")
            values.setdefault(name, 0)
        name = template.format(values)
        if prefix:
            name = prefix + self.CHECKPOINT_JOIN_CHAR + name
        if ver is not None:
            name += f"{self.CHECKPOINT_JOIN_CHAR}v{ver}"
        return name + self.FILE_EXTENSION

    def _free_path(self, name, replaced):
        """``dirpath/name``, with -v1, -v2... if a file of that name exists and is not the one being replaced."""
        path, ver = os.path.join(self.dirpath, name), 1
        base = name[: -len(self.FILE_EXTENSION)]
        while os.path.exists(path) and path != replaced:
            path = os.path.join(self.dirpath, f"{base}{self.CHECKPOINT_JOIN_CHAR}v{ver}{self.FILE_EXTENSION}")
            ver += 1
        return path

    def _kth_path(self):
        pick = max if self.mode == "min" else min
        return pick(self.best_k_models, key=self.best_k_models.get)

    def _worst_if_nan(self, value):
        value = float(value)
        return (math.inf if self.mode == "min" else -math.inf) if math.isnan(value) else value

    # == state ========================================================================================================
    def state_dict(self):
        kth = self._kth_path() if self.best_k_models else ""
        return {"monitor": self.monitor, "mode": self.mode, "dirpath": self.dirpath,
                "best_model_path": self.best_model_path, "best_model_score": self.best_model_score,
                "current_score": self.current_score, "best_k_models": dict(self.best_k_models),
                "kth_best_model_path": kth, "kth_value": self.best_k_models.get(kth),
                "last_model_path": self.last_model_path}

    def load_state_dict(self, state):
        """Keep the ranking of a resumed run; files deleted since are dropped from it."""
        self.best_k_models = {p: float(v) for p, v in state.get("best_k_models", {}).items() if os.path.isfile(p)}
        self.best_model_path = state.get("best_model_path", "") or ""
        self.best_model_score = state.get("best_model_score")
        self.current_score = state.get("current_score")
        self.last_model_path = state.get("last_model_path", "") or ""
