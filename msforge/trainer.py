"""The Trainer: the only training loop, readable from ``fit`` down to one optimizer step.

fit -> _train_epoch -> _train_batch -> the compiled ``TrainStep`` (msforge/train_step.py) -> optimizer update.
Validation, test and predict share ``_run_eval``. Checkpoint files are written by ``save_checkpoint`` and read back by
``_restore``; callbacks only decide when and where.
"""
import contextlib
import functools
import inspect
import itertools
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from typing import Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from msforge import checkpoint as ckpt_io
from msforge import layers
from msforge.callback import Callback
from msforge.compile_cache import load_output_names, save_output_names
from msforge.arguments import MisconfigurationError, check_trainer_arguments, choice, limit_batches, parse_max_time
from msforge.data import (DataLoader, DataModule, batch_size_of, group_batches, is_batch_list, iterate_batches,
                          loader_length)
from msforge.module import Module, find_self_call
from msforge.results import EpochMeans, PendingStep, StepOutputs, to_float
from msforge.schedulers import ReduceLROnPlateau, get_lrs, set_lrs
from msforge.seed import seed_everything
from msforge.train_step import LossScale, LossScaleState, MultiStep, TrainStep

# the allowed values are msforge.arguments'; these map them to MindSpore's
PRECISIONS = {"32": None, "32-true": None, "16-mixed": ms.float16, "bf16-mixed": ms.bfloat16}
MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


class _ReadsPendingSteps:
    """A Trainer attribute (kept as ``_<name>``) whose every read first reads back the training steps not yet read."""

    def __set_name__(self, owner, name):
        self.stored = f"_{name}"

    def __get__(self, trainer, owner=None):
        if trainer is None:
            return self
        trainer._read_pending()
        return getattr(trainer, self.stored)

    def __set__(self, trainer, value):
        setattr(trainer, self.stored, value)


class Trainer:
    """Trains, validates, tests and predicts with a ``msforge.Module``; arguments as Lightning's Trainer."""

    def __init__(self, max_epochs: Optional[int] = None, max_steps: int = -1,
                 max_time: Optional[Union[str, int, float, dict]] = None,
                 limit_train_batches: Optional[Union[int, float]] = None,
                 limit_val_batches: Optional[Union[int, float]] = None,
                 limit_test_batches: Optional[Union[int, float]] = None,
                 limit_predict_batches: Optional[Union[int, float]] = None,
                 fast_dev_run: Union[bool, int] = False, overfit_batches: Union[int, float] = 0,
                 num_sanity_val_steps: int = 2, val_check_interval: Optional[Union[int, float]] = None,
                 check_val_every_n_epoch: Optional[int] = 1, log_every_n_steps: int = 50,
                 gradient_clip_val: Optional[Union[int, float]] = None, gradient_clip_algorithm: str = "norm",
                 accumulate_grad_batches: int = 1, steps_per_execution: int = 1,
                 precision: Union[str, int] = "32",
                 loss_scale: Optional[Union[int, float, str, dict]] = "auto", device_target: str = "auto",
                 mode: str = "graph", deterministic: bool = False, seed: Optional[int] = None,
                 callbacks: Optional[list] = None, logger: bool = True, enable_progress_bar: bool = True,
                 enable_checkpointing: bool = True, enable_model_summary: bool = True,
                 default_root_dir: Optional[str] = None,
                 name: str = "msforge_logs", version: Optional[Union[int, str]] = None, strategy: str = "auto",
                 devices: int = 1):
        check_trainer_arguments({k: v for k, v in locals().items() if k != "self"})
        self.precision = str(precision)
        self.device_target, self.mode, self.strategy = device_target, mode, strategy
        self.gradient_clip_algorithm = gradient_clip_algorithm
        if loss_scale == "auto":  # Lightning's default: fp16 gradients underflow without a (dynamic) scale
            loss_scale = "dynamic" if self.precision == "16-mixed" else None
        self.loss_scale_config = self._loss_scale(loss_scale)
        self.gradient_clip_val = gradient_clip_val
        self.accumulate_grad_batches = accumulate_grad_batches
        self.steps_per_execution = steps_per_execution
        self.max_time = parse_max_time(max_time)
        self.fast_dev_run = int(fast_dev_run)  # True -> 1 batch
        if self.fast_dev_run:
            n = self.fast_dev_run
            max_epochs, max_steps, num_sanity_val_steps = 1, n, 0
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = n
            logger, enable_checkpointing, val_check_interval = False, False, None
        if max_epochs is None:  # Lightning's default: 1000 epochs unless steps or time end the run
            max_epochs = 1000 if max_steps == -1 and max_time is None else -1
        self.max_epochs = None if max_epochs == -1 else max_epochs  # None: no epoch limit
        self.max_steps = max_steps
        self.limits = {"train": limit_train_batches, "val": limit_val_batches, "test": limit_test_batches,
                       "predict": limit_predict_batches}
        self.overfit_batches = overfit_batches
        self.num_sanity_val_steps = num_sanity_val_steps
        self.val_check_interval = val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.log_every_n_steps = log_every_n_steps
        self.deterministic = deterministic
        self.seed = seed
        self.default_root_dir = os.path.abspath(default_root_dir or os.getcwd())
        self.name = name
        self.version = version
        self.distributed = strategy == "data_parallel" or devices > 1
        self.global_rank, self.world_size = 0, 1
        self.callbacks = self._default_callbacks(list(callbacks or []), logger, enable_checkpointing,
                                                 enable_progress_bar, enable_model_summary)
        # progress and results
        self.current_epoch = 0
        self.global_step = 0
        self._skipped_steps = 0
        self._loss_scale_value = None
        self.should_stop = False
        self.diverged = False  # a non-finite loss or weights: the run stops and writes no checkpoint from then on
        self.stop_reason = None
        self.sanity_checking = False
        self.interrupted = None
        self.state = None
        self._callback_metrics = {}
        self.logged_metrics = {}
        self._progress_bar_metrics = {}
        # training steps whose outputs are still Tensors: read back together when something needs them (a log step,
        # validation, a checkpoint, the epoch end, a read of the four _ReadsPendingSteps attributes), not one host sync
        # per step
        self._pending_steps = []
        self.module = None
        self.datamodule = None
        self.optimizers = []  # configure_optimizers()'s, in order; several only under manual optimization
        self.optimizer = None  # the first of them
        self.lr_schedulers = []
        self.train_step = None  # automatic optimization's compiled step
        self._multi_step = None  # steps_per_execution > 1: steps_per_execution steps in one compiled call
        self._lr_params = ()  # the learning rates it sets per step (when a scheduler steps per step)
        self._output_keys = None  # the names of training_step's dict output, in its order (MultiStep returns values)
        self._manual_steps = {}  # manual optimization's compiled steps, one per (optimizer index, loss_fn)
        self._scale_states = []  # manual optimization: each optimizer's own loss scale
        self.num_training_batches = 0
        # batches per loader of the current (or last) run of each kind, Lightning's names
        self.num_sanity_val_batches, self.num_val_batches, self.num_test_batches, self.num_predict_batches = \
            [], [], [], []
        self.train_dataloader = None
        self._log_dir = None
        self._log_target = None
        self._batch_size = None
        self._batches_done = 0
        self._total_batches = 0  # training batches across epochs: check_val_every_n_epoch=None counts these
        self._epoch_done = False
        self._resume_batches = 0
        self._train_means = EpochMeans()
        self._fit_start_time = None
        self._carried_fit_time = 0.0  # a resumed fit's seconds before its checkpoint (max_time counts them)
        self._interrupt_signal = None
        self._step_logging_defaults = False  # inside a manual training_step, self.log defaults to on_step
        self._manual_batch_idx = None
        self._validated = False  # a validation has run in this fit (ReduceLROnPlateau's monitor can exist)
        self._warned_monitors = set()

    # == construction helpers ========================================================================================
    @staticmethod
    def _loss_scale(value):
        try:
            return LossScale.from_arg(value)
        except ValueError as err:
            raise MisconfigurationError(str(err)) from None

    @staticmethod
    def _default_callbacks(callbacks, logger, enable_checkpointing, enable_progress_bar, enable_model_summary):
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise MisconfigurationError(f"callbacks must be msforge.Callback instances, got {type(cb).__name__}")
        if not enable_checkpointing:
            callbacks = [cb for cb in callbacks if not hasattr(cb, "best_model_path")]
        if not enable_progress_bar:
            callbacks = [cb for cb in callbacks if not getattr(cb, "is_progress_bar", False)]
        if not enable_model_summary:
            callbacks = [cb for cb in callbacks if type(cb).__name__ != "ModelSummary"]
        if logger or enable_checkpointing or enable_progress_bar or enable_model_summary:
            cbs = default_callbacks_package()

            def have(kind):  # by name too: a class of another copy of the package counts
                return any(kind.__name__ in [c.__name__ for c in type(cb).__mro__] for cb in callbacks)

            if enable_checkpointing and not have(cbs.ModelCheckpoint):
                callbacks.append(cbs.ModelCheckpoint(save_last=True))
            if logger and not have(cbs.TensorBoard):
                callbacks.append(cbs.TensorBoard())
            if logger and not have(cbs.CSVLogger):
                callbacks.append(cbs.CSVLogger())
            if enable_progress_bar and not have(cbs.ProgressBar):
                callbacks.append(cbs.ProgressBar())
            if enable_model_summary and not have(cbs.ModelSummary):
                callbacks.append(cbs.ModelSummary())
        # callbacks that must see the others' results (ModelCheckpoint saves their state) declare a higher order
        return sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))

    @property
    def checkpoint_callbacks(self):
        return [cb for cb in self.callbacks if hasattr(cb, "best_model_path")]

    @property
    def checkpoint_callback(self):
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def is_global_zero(self):
        return self.global_rank == 0

    @property
    def log_dir(self):
        """``<default_root_dir>/<name>/version_<N>``: created on first use, N counting up, never reused."""
        if self._log_dir is None:
            root = os.path.join(self.default_root_dir, self.name)
            if self.version is not None:
                self._log_dir = os.path.join(root, str(self.version))
                if self.is_global_zero:
                    os.makedirs(self._log_dir, exist_ok=True)
            else:
                n = ckpt_io.next_version(root)
                while True:
                    path = os.path.join(root, f"version_{n}")
                    if not self.is_global_zero:
                        break
                    try:
                        os.makedirs(path)
                        break
                    except FileExistsError:
                        n += 1
                self._log_dir = path
        return self._log_dir

    @property
    def estimated_stepping_batches(self):
        """Optimizer updates this fit will make (for OneCycleLR's total_steps)."""
        per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
        total = per_epoch * self.max_epochs if self.max_epochs is not None else math.inf
        return total if self.max_steps == -1 else min(total, self.max_steps)

    # the latest value of every metric (Lightning's), the bar's, and loss scaling's counters: each read of them reads
    # the pending training steps first, so they are never behind the steps run
    callback_metrics = _ReadsPendingSteps()
    progress_bar_metrics = _ReadsPendingSteps()
    skipped_steps = _ReadsPendingSteps()  # updates skipped by loss scaling (non-finite gradients)
    loss_scale_value = _ReadsPendingSteps()

    # == public entry points ==========================================================================================
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None):
        """Train ``model``; with ``ckpt_path`` (a path, "last" or "best") continue exactly where it was saved.
        Lightning's argument order; a DataModule given as ``train_dataloaders`` is taken as the datamodule."""
        if isinstance(train_dataloaders, DataModule):
            if datamodule is not None:
                raise MisconfigurationError("fit() got a DataModule as train_dataloaders and another as datamodule; "
                                            "pass one")
            train_dataloaders, datamodule = None, train_dataloaders
        self._check_module(model)
        resume = self.read_checkpoint(ckpt_path) if ckpt_path is not None else None
        if resume is not None:
            self._check_resumable(*resume)
        # from here on a SIGTERM/SIGINT is noted and acted on at the next point the run can stop and save at
        previous_handlers, started = self._install_signal_handlers(), False
        try:
            self._start("fit", model, datamodule)
            started = True
            train_loader = self._train_loader(train_dataloaders, datamodule)
            val_loaders = self._loaders("val", val_dataloaders, datamodule, required=False)
            if self.overfit_batches:
                val_loaders = [train_loader]
            self.optimizers, self.lr_schedulers = self._configure_optimizers(model)
            self.optimizer = self.optimizers[0]
            self._time_schedulers()
            self._validated, self._warned_monitors = False, set()
            self._apply_precision(model)
            if model.automatic_optimization:
                self.train_step, self._scale_states = self._build_train_step(model, self.optimizer), []
                self._prepare_executions()
            else:
                self._prepare_manual_optimization(model)
            self._carried_fit_time, self._fit_start_time = 0.0, None
            self._pending_steps = []
            if resume is not None:
                self._restore(*resume, train_loader)
            # max_time counts the whole fit, the time before a resume included (as Lightning's Timer)
            self._fit_start_time = time.monotonic() - self._carried_fit_time
            self._call("on_fit_start")
            if self.num_sanity_val_steps and val_loaders and not self._interrupt_pending():
                self._sanity_check(val_loaders)
            self._call("on_train_start")
            # a signal during the last validation (or anywhere between epochs) stops here, after saving
            while not self._interrupt_pending() and not self._fit_done():
                self._train_epoch(train_loader, val_loaders)
            self._call("on_train_end")
            self._call("on_fit_end")
        except BaseException as err:
            if started:
                self._call_callbacks("on_exception", err)
            raise
        finally:
            self._restore_signal_handlers(previous_handlers)
            if started:
                self._finish("fit")
        if self.interrupted:  # SIGTERM/SIGINT: checkpoint saved and resume command printed; the job did not finish
            raise SystemExit(128 + self._interrupt_signal)

    def validate(self, model=None, dataloaders=None, ckpt_path=None, datamodule=None, verbose=True):
        return self._evaluate("validate", model, dataloaders, ckpt_path, datamodule, verbose)

    def test(self, model=None, dataloaders=None, ckpt_path=None, datamodule=None, verbose=True):
        return self._evaluate("test", model, dataloaders, ckpt_path, datamodule, verbose)

    def predict(self, model=None, dataloaders=None, ckpt_path=None, datamodule=None):
        model = model or self.module
        self._check_module(model, training=False)
        weights = self.read_checkpoint(ckpt_path) if ckpt_path is not None else None
        self._start("predict", model, datamodule)
        self._apply_precision(model)
        if weights is not None:
            self._load_weights(model, *weights)
        loaders = self._loaders("predict", dataloaders, datamodule or self.datamodule)
        try:
            return self._run_eval("predict", loaders)
        finally:
            self._finish("predict")

    def _evaluate(self, stage, model, dataloaders, ckpt_path, datamodule, verbose):
        model = model or self.module
        self._check_module(model, training=False)
        weights = self.read_checkpoint(ckpt_path) if ckpt_path is not None else None
        self._start(stage, model, datamodule)
        self._apply_precision(model)
        if weights is not None:
            self._load_weights(model, *weights)
        kind = "val" if stage == "validate" else "test"
        loaders = self._loaders(kind, dataloaders, datamodule or self.datamodule)
        try:
            results = self._run_eval("validation" if stage == "validate" else "test", loaders)
        finally:
            self._finish(stage)
        if verbose and self.is_global_zero:
            for i, metrics in enumerate(results):
                shown = "  ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))
                print(f"{stage} results{'' if len(results) == 1 else f' (dataloader {i})'}: {shown}")
        return results

    # == the fit loop =================================================================================================
    def _fit_done(self):
        if self.should_stop:
            return True
        if self.max_steps != -1 and self.global_step >= self.max_steps:
            return True
        if self.max_epochs is not None and self.current_epoch >= self.max_epochs:
            return True
        return self._time_is_up()

    def _time_is_up(self):
        return self.max_time is not None and self._fit_seconds() >= self.max_time

    def _fit_seconds(self):
        """Seconds of this fit so far, as max_time counts them: the fit's before a resume included."""
        return self._carried_fit_time if self._fit_start_time is None else time.monotonic() - self._fit_start_time

    def _time_schedulers(self):
        """Give the schedulers that last max_time (``OneCycleLR(total_steps="max_time")``) the fit's clock."""
        for config in self.lr_schedulers:
            scheduler = config["scheduler"]
            if getattr(scheduler, "follows_max_time", False):
                if self.max_time is None:
                    raise MisconfigurationError(f"{type(scheduler).__name__}(total_steps='max_time') lasts the "
                                                "Trainer's max_time, and max_time is None: set Trainer(max_time=...)",
                                                key="max_time")
                scheduler.time_share = lambda: self._fit_seconds() / self.max_time

    def _train_epoch(self, loader, val_loaders):
        start = self._resume_batches
        self._resume_batches = 0
        if start == 0:
            self._train_means = EpochMeans()
        n_batches = self.num_training_batches
        epoch_start, samples = time.monotonic(), 0
        self._call("on_train_epoch_start")
        batch_idx = start - 1
        batches = iterate_batches(loader, n_batches, start, epoch=self.current_epoch)
        full = self.steps_per_execution if self._multi_step is not None else 1
        for group in group_batches(batches, full, lambda first: self._execution_size(first, n_batches)):
            if len(group) == 1:
                batch_idx, batch = group[0]
                samples += self._train_batch(batch, batch_idx, n_batches)
            else:
                samples += self._train_execution(group, n_batches)
                batch_idx = group[-1][0]
            self._batches_done = batch_idx + 1
            if self._val_due_after(batch_idx, n_batches) and val_loaders:
                self._run_eval("validation", val_loaders)
            if self._stop_requested():
                break
        epoch_complete = batch_idx + 1 >= n_batches
        self._end_epoch(epoch_complete, val_loaders, time.monotonic() - epoch_start, samples)

    def _train_batch(self, batch, batch_idx, n_batches):
        """One training batch: the compiled step, or the module's manual steps; returns the batch size."""
        self._batch_size = batch_size_of(batch)
        self._call("on_train_batch_start", batch, batch_idx)
        step_before = self.global_step
        if self.module.automatic_optimization:
            outputs = self._automatic_step(batch, batch_idx, n_batches)
        else:  # host code: its outputs are floats already
            outputs = self._manual_training_step(batch, batch_idx)
            self._record_step(outputs, self._batch_size)
        if self._step_log_due(step_before):
            self._log_step(outputs)
        if self.global_step > step_before:
            self._step_schedulers("step")
        self._batches_done = batch_idx + 1  # a checkpoint saved from on_train_batch_end resumes after this batch
        self._total_batches += 1
        self._log_target = self._train_means
        self._call("on_train_batch_end", outputs, batch, batch_idx)
        self._log_target = None
        return self._batch_size

    def _record_step(self, outputs, batch_size):
        """One step's outputs (floats) into the epoch means and the callback and progress-bar metrics."""
        step_metrics = {f"train_{name}": value for name, value in outputs.items()}
        for name, value in step_metrics.items():
            self._train_means.add(name, value, batch_size)
        self._callback_metrics.update(step_metrics)
        if "loss" in outputs:
            self._progress_bar_metrics["train_loss"] = outputs["loss"]

    def _step_log_due(self, step_before):
        return self.global_step // self.log_every_n_steps > step_before // self.log_every_n_steps  # a multiple passed

    def _log_step(self, outputs):
        """The step log: this step's outputs (and the loss scale) at the current global step; every step before it is
        read back here too (the log is a point where the host waits for the steps anyway)."""
        self._read_pending()
        self.log_metrics({**{f"train_{name}": value for name, value in outputs.items()}, **self._scale_metrics()})

    def _read_pending(self):
        """Read the pending training steps' outputs back to the host, in step order: into the epoch means and metrics,
        the loss-scale counters and the finite-loss check (a non-finite loss stops the run, naming its step)."""
        if not self._pending_steps:
            return
        pending, self._pending_steps = self._pending_steps, []
        for step in pending:
            outputs = step.outputs.floats()
            self._record_step(outputs, step.batch_size)
            if step.finite is not None:  # loss scaling: a non-finite update was skipped in the graph; count it
                self._skipped_steps += 0 if not step.is_update or bool(step.finite.asnumpy()) else 1
            elif not self.diverged:  # nothing skipped a non-finite step: its update poisoned the weights
                self._check_finite_loss(outputs["loss"], step.batch_idx, step.global_step, step.epoch)
        if pending[-1].scale is not None:  # the scale after the last of them is the current one
            self._loss_scale_value = to_float(pending[-1].scale)

    def _train_execution(self, group, n_batches):
        """steps_per_execution: the group's batches (one per step) in one compiled call; returns the samples seen.

        Callbacks and module hooks see the execution as one batch: ``on_train_batch_start`` with its first batch and
        index, ``on_train_batch_end`` with its last and the last step's outputs. Steps, epoch means, step logs, the
        finite-loss check and per-step schedulers are kept per step, as one step at a time would."""
        (first_idx, first), (last_idx, last) = group[0], group[-1]
        k = self.accumulate_grad_batches
        updates = [self._is_update(i, n_batches) for i, _ in group]
        self._batch_size = batch_size_of(first)
        self._call("on_train_batch_start", first, first_idx)
        if any(updates):
            self._call("on_before_optimizer_step", self.optimizer)
        lrs, lrs_after = self._execution_lrs(updates)
        stacked = tuple(ops.stack([batch[j] for _, batch in group]) for j in range(len(first)))
        is_updates = Tensor(np.array(updates)) if k > 1 else None
        try:
            outs, skipped, scale = self._multi_step(is_updates, lrs, ms.mutable(stacked))
        except Exception as err:
            if os.environ.get("MSFORGE_TRACEBACK") or self._multi_step.has_run:
                raise
            first_line = _first_line(err)
            raise MisconfigurationError(
                f"steps_per_execution={self.steps_per_execution}: {type(self.module).__name__}'s training_step "
                f"did not compile as {len(group)} steps in one graph ({type(err).__name__}: {first_line}); use "
                "steps_per_execution=1. MSFORGE_TRACEBACK=1 shows MindSpore's whole report") from None
        self._multi_step.has_run = True
        if lrs_after is not None:
            set_lrs(self.optimizer, lrs_after)
        self._read_pending()  # single steps before this execution (at an epoch's start) count first
        if isinstance(outs, tuple):  # a dict output: its values' stacks in the dict's order
            columns = {name: out.asnumpy() for name, out in zip(self._output_keys, outs)}
        else:
            columns = {"loss": outs.asnumpy()}
        if self.loss_scale_config is not None:
            self.skipped_steps += int(skipped.asnumpy())
            self.loss_scale_value = to_float(scale)
        samples, outputs = 0, {}
        for s, ((batch_idx, batch), update) in enumerate(zip(group, updates)):
            step_before = self.global_step
            self.global_step += int(update)
            outputs = {name: float(column[s]) for name, column in columns.items()}
            self._record_step(outputs, batch_size_of(batch))
            if self._step_log_due(step_before):
                self._log_step(outputs)
            self._total_batches += 1
            samples += batch_size_of(batch)
        if self.loss_scale_config is None and not self.diverged:
            losses = columns["loss"]
            bad = next((s for s, value in enumerate(losses) if not math.isfinite(value)), len(losses) - 1)
            self._check_finite_loss(float(losses[bad]), group[bad][0], self.global_step, self.current_epoch)
        self._batches_done = last_idx + 1  # a checkpoint saved from on_train_batch_end resumes after this execution
        self._log_target = self._train_means
        self._call("on_train_batch_end", outputs, last, last_idx)
        self._log_target = None
        return samples

    def _is_update(self, batch_idx, n_batches):
        """Whether this batch ends an accumulation (every batch without accumulation; always the epoch's last)."""
        k = self.accumulate_grad_batches
        return k == 1 or (batch_idx + 1) % k == 0 or batch_idx + 1 == n_batches

    def _execution_size(self, first_idx, n_batches):
        """How many batches the execution starting at ``first_idx`` takes: steps_per_execution, or fewer (then run
        one at a time) so that it ends where validation is due or max_steps is reached; one until the single step
        has run in this process (it gives the clearest error for a bad training_step, and the output names)."""
        if self._multi_step is None or not self.train_step.has_run:
            return 1
        left = None if self.max_steps == -1 else self.max_steps - self.global_step
        updates = 0
        for size in range(1, self.steps_per_execution + 1):
            idx = first_idx + size - 1
            if idx + 1 >= n_batches:
                return size
            updates += self._is_update(idx, n_batches)
            if left is not None and updates >= left:
                return size
            if self._val_due_after(idx, n_batches, total_batches=self._total_batches + size):
                return size
        return self.steps_per_execution

    def _execution_lrs(self, updates):
        """The learning rates of an execution's steps, ``(Tensor (N, groups), rates to leave after it)``: the
        schedulers that step per step are stepped ahead here, so each step uses the rate it would use one step at a
        time. ``(None, None)`` when none steps per step."""
        if not self._lr_params:
            return None, None
        rows, step = [], self.global_step
        for update in updates:
            rows.append(get_lrs(self.optimizer))
            if update:
                self.global_step += 1
                self._step_schedulers("step")
        self.global_step = step
        return Tensor(np.array(rows, np.float32)), get_lrs(self.optimizer)

    def _prepare_executions(self):
        """steps_per_execution > 1: the N-step graph over the train step (compiled at its first call)."""
        self._multi_step, self._lr_params, self._output_keys = None, (), None
        n = self.steps_per_execution
        if n == 1:
            return
        for config in self.lr_schedulers:
            if config["interval"] == "step" and isinstance(config["scheduler"], ReduceLROnPlateau):
                raise MisconfigurationError(
                    f"steps_per_execution={n} with ReduceLROnPlateau stepping every step: it needs each step's "
                    "metrics on the host; use interval 'epoch' or steps_per_execution=1", key="steps_per_execution")
        if any(config["interval"] == "step" for config in self.lr_schedulers):
            lr = self.optimizer.learning_rate
            self._lr_params = tuple(lr) if self.optimizer.is_group_lr else (lr,)
        self._multi_step = MultiStep(self.train_step, n, self._lr_params)
        self._multi_step.set_train(True)
        self._multi_step.has_run = False

    def _automatic_step(self, batch, batch_idx, n_batches):
        """The compiled step: forward, backward and (on update batches) the optimizer; returns its outputs, read back
        from their Tensors when first looked at. The step joins the pending ones (``_read_pending``)."""
        is_update = self._is_update(batch_idx, n_batches)
        if is_update:
            self._call("on_before_optimizer_step", self.optimizer)
        first = not self.train_step.has_run
        out, finite, scale = self._run_train_step(self.train_step, is_update, batch)
        if isinstance(out, dict) and self._output_keys is None:
            self._output_keys = tuple(out)
        outputs = StepOutputs(out.items() if isinstance(out, dict) else [("loss", out)])
        if is_update:
            self.global_step += 1
        # without loss scaling every update is finite (no need to ask), and the loss is checked instead
        scaled = self.loss_scale_config is not None
        self._pending_steps.append(PendingStep(outputs, self._batch_size, self.global_step, self.current_epoch,
                                               batch_idx, is_update, finite if scaled else None,
                                               scale if scaled else None))
        # read at once: the first step (a non-scalar output fails in the step that made it), and every step under data
        # parallel (the finite-loss check is a collective: all ranks must agree at the same step)
        if first or (self.distributed and self.world_size > 1):
            self._read_pending()
        return outputs

    def _manual_training_step(self, batch, batch_idx):
        """Manual optimization: the module's ``training_step(batch, batch_idx)`` runs here on the host and updates
        through ``manual_step``; it may return nothing, a loss or a dict of scalars (logged as train_<name>)."""
        self._log_target, self._manual_batch_idx = self._train_means, batch_idx
        self._step_logging_defaults = True  # self.log in training_step: on_step=True, on_epoch=False (Lightning's)
        try:
            out = self.module.training_step(batch, batch_idx)
        finally:
            self._log_target, self._step_logging_defaults = None, False
        if out is None:
            return {}
        return {name: to_float(v, name) for name, v in (out.items() if isinstance(out, dict) else [("loss", out)])}

    def manual_step(self, optimizer, loss_fn, inputs):
        """``Module.manual_step``: one compiled update of ``optimizer``'s parameters by the gradients of
        ``loss_fn(*inputs)`` with respect to them (clipping, loss scaling and precision as configured); returns the
        loss Tensor. One graph per (optimizer, loss_fn): pass the same function object every step, and everything
        that changes between steps as ``inputs`` (Tensors), never captured in a closure (it would be a constant)."""
        if self.state != "fit" or self.module is None or self.module.automatic_optimization:
            raise MisconfigurationError("manual_step() is for manual optimization: call it from training_step with "
                                        "self.automatic_optimization = False set in the module's __init__")
        index = next((i for i, opt in enumerate(self.optimizers) if opt is optimizer), None)
        if index is None:
            raise MisconfigurationError(f"manual_step() got a {type(optimizer).__name__} that configure_optimizers() "
                                        "did not return; pass one of self.optimizers()")
        key = (index, loss_fn)
        step = self._manual_steps.get(key)
        if step is None:
            step = self._build_train_step(self.module, optimizer, loss_fn=loss_fn,
                                          scale_state=self._scale_states[index])
            self._manual_steps[key] = step
            if len(self._manual_steps) == 4 * len(self.optimizers) + 1:
                warnings.warn(f"manual_step() has compiled {len(self._manual_steps)} graphs: pass the same loss_fn "
                              "object each step (a method, or a function defined once), not a new lambda", stacklevel=3)
        self._call("on_before_optimizer_step", optimizer)
        out, finite, scale = self._run_train_step(step, True, tuple(inputs))
        loss = out["loss"] if isinstance(out, dict) else out
        self.global_step += 1
        self.skipped_steps += 0 if bool(finite.asnumpy()) else 1
        if self.loss_scale_config is not None:
            self.loss_scale_values[index] = to_float(scale)
        elif not self.diverged:
            self._check_finite_loss(to_float(loss, "loss"), self._manual_batch_idx, self.global_step,
                                    self.current_epoch)
        return loss

    def _run_train_step(self, step, is_update, batch):
        """One call of a compiled step; returns ``(outputs, finite, scale)`` with a dict output as a dict again."""
        batch = ms.mutable(batch)  # a plain tuple of Tensors would be compiled in as constants
        if self.accumulate_grad_batches > 1:
            is_update = Tensor(is_update, ms.bool_)
        if step.has_run:
            out, finite, scale = step(is_update, batch)
            return (dict(zip(step.names, out)) if step.names else out), finite, scale
        what = "training_step" if step.loss_fn is None else f"manual_step's loss_fn {_name(step.loss_fn)}"
        try:
            with compile_report():
                out, finite, scale = step(is_update, batch)
        except Exception as err:  # the first call compiles: turn MindSpore's report into one line
            if os.environ.get("MSFORGE_TRACEBACK"):
                raise
            first = _first_line(err)
            hint = " Run with Trainer(mode='pynative') to find the line." if self.mode == "graph" else ""
            raise MisconfigurationError(
                f"{what} of {type(self.module).__name__} failed in its first step ({type(err).__name__}: "
                f"{first}); it must return a loss Tensor or a dict with a 'loss' Tensor.{hint} MSFORGE_TRACEBACK=1 "
                "shows MindSpore's whole report") from None
        step.names = step.output_names
        if step.names is None:  # MindSpore took the graph from its compile cache: the names are beside it
            step.names = load_output_names(what, len(out) if isinstance(out, tuple) else 0)
        else:
            save_output_names(what, step.names)
        if step.names:
            out = dict(zip(step.names, out))
        if not (isinstance(out, Tensor) or (isinstance(out, dict) and isinstance(out.get("loss"), Tensor)
                                            and all(isinstance(v, Tensor) for v in out.values()))):
            got = f"a dict with keys {sorted(out)}" if isinstance(out, dict) else f"a {type(out).__name__}"
            raise MisconfigurationError(f"{what} of {type(self.module).__name__} returned {got}; return the "
                                        "loss Tensor or a dict with a 'loss' Tensor (and more scalar Tensors)")
        step.has_run = True
        return out, finite, scale

    def _check_finite_loss(self, loss, batch_idx, step, epoch):
        """A non-finite loss at (step, epoch, batch_idx) diverges the run; data parallel: on every rank (a collective:
        called at the same steps on all ranks)."""
        bad = not math.isfinite(loss)
        if self.distributed and self.world_size > 1:  # every rank stops at the same step, or the others would hang
            from mindspore import ops

            flag = Tensor(np.array([1.0 if bad else 0.0], np.float32))
            bad = bool(ops.AllReduce()(flag).asnumpy()[0] > 0)  # a sum: CPU's AllReduce has no max
        if bad:
            what = f"training loss is {loss}" if not math.isfinite(loss) else \
                "training loss is not finite on another rank"
            self._diverge(f"{what} at global step {step} (epoch {epoch}, batch {batch_idx})")

    def _diverge(self, reason):
        self.diverged, self.should_stop, self.stop_reason = True, True, reason
        if self.is_global_zero:
            print(f"msforge: {reason}: stopping; no checkpoint is written from here on, the last one saved is kept",
                  file=sys.stderr, flush=True)

    def checkpoint_allowed(self):
        """Whether ModelCheckpoint may write now: not once the run has diverged, nor over good files with non-finite
        weights (a finite loss can still give inf/NaN gradients). Checks the weights, so call it once per save point."""
        self._read_pending()  # a non-finite loss among the steps not yet read diverges the run first
        if self.diverged:
            return False
        from mindspore import ops

        for p in self.module.trainable_params() if self.module is not None else []:
            if not bool(ops.isfinite(p).all().asnumpy()):
                self._diverge(f"weight {p.name!r} is not finite at global step {self.global_step} (epoch "
                              f"{self.current_epoch}, batch {self._batches_done - 1})")
                return False
        return True

    def _scale_metrics(self):
        if self.loss_scale_config is None:
            return {}
        if self.module.automatic_optimization:
            scales = {"loss_scale": self.loss_scale_value}
        else:  # one scale per optimizer
            scales = {f"loss_scale/optimizer_{i}": v for i, v in enumerate(self.loss_scale_values) if v is not None}
        return {**scales, "skipped_steps": float(self.skipped_steps)}

    def _stop_requested(self):
        return self._interrupt_pending() or self._fit_done()

    def _interrupt_pending(self):
        """Whether a SIGTERM/SIGINT arrived; the first time it is seen, save the checkpoint to resume from."""
        if self._interrupt_signal is not None and not self.interrupted:
            self._save_on_interrupt()
        return self.interrupted is not None

    def _end_epoch(self, epoch_complete, val_loaders, seconds, samples):
        self._read_pending()
        epoch_metrics = {f"{name}_epoch": value for name, value in self._train_means.means().items()}
        epoch_metrics.update({"epoch": float(self.current_epoch), "epoch_time": seconds,
                              "throughput": samples / seconds if seconds > 0 else 0.0})
        self.callback_metrics.update(epoch_metrics)
        self.log_metrics(epoch_metrics)
        if epoch_complete and not self.interrupted:
            if val_loaders and self._val_due_at_epoch_end():
                self._run_eval("validation", val_loaders)
            self._step_schedulers("epoch")
        # a checkpoint written from on_train_epoch_end resumes at the next epoch when this one is complete
        self._epoch_done = epoch_complete
        self._log_target = self._train_means
        self._call("on_train_epoch_end")
        self._log_target = None
        self._epoch_done = False
        if epoch_complete:
            self.current_epoch += 1
            self._batches_done = 0

    def _val_due_after(self, batch_idx, n_batches, total_batches=None):
        """Mid-epoch validation from val_check_interval (an int = every N batches, a float = fraction of epoch);
        ``total_batches``: the count of training batches across epochs after this one (default: the current count)."""
        interval = self.val_check_interval
        if interval is None or self.overfit_batches:
            return False
        if self.check_val_every_n_epoch is None:  # Lightning: every `interval` batches counted across epochs
            total = self._total_batches if total_batches is None else total_batches
            return total % int(interval) == 0
        if batch_idx + 1 >= n_batches:
            return False
        if isinstance(interval, float):
            return batch_idx + 1 in mid_epoch_val_points(n_batches, interval) and self._val_epoch_due()
        return (batch_idx + 1) % int(interval) == 0 and self._val_epoch_due()

    def _val_due_at_epoch_end(self):
        return self._val_epoch_due()

    def _val_epoch_due(self):
        every = self.check_val_every_n_epoch
        return every is not None and (self.current_epoch + 1) % every == 0

    def _step_schedulers(self, interval):
        if not self.module.automatic_optimization:
            return  # manual optimization: the module steps its schedulers itself, as in Lightning
        for config in self.lr_schedulers:
            if config["interval"] != interval:
                continue
            count = self.global_step if interval == "step" else self.current_epoch + 1
            if count % config["frequency"]:
                continue
            scheduler = config["scheduler"]
            if isinstance(scheduler, ReduceLROnPlateau):
                monitor = config.get("monitor") or "val_loss"
                if monitor not in self.callback_metrics:
                    if interval == "step" and not self._validated:
                        continue  # no validation yet this early in training
                    message = (f"ReduceLROnPlateau monitors {monitor!r}, which is not among the logged metrics "
                               f"{sorted(self.callback_metrics)}")
                    if config.get("strict", True):  # Lightning's strict: a missing monitor is an error...
                        raise MisconfigurationError(f"{message}; log it, change lr_scheduler's 'monitor' or set "
                                                    "'strict': False to skip the scheduler's step")
                    if monitor not in self._warned_monitors:  # ...or, strict=False, a warning and no step
                        self._warned_monitors.add(monitor)
                        warnings.warn(f"{message}: the scheduler's step is skipped (strict=False)", RuntimeWarning,
                                      stacklevel=2)
                    continue
                scheduler.step(self.callback_metrics[monitor])
            else:
                scheduler.step()

    def _sanity_check(self, val_loaders):
        self.sanity_checking = True
        self._call_callbacks("on_sanity_check_start")
        limit = None if self.num_sanity_val_steps == -1 else self.num_sanity_val_steps  # -1: all (limited) batches
        with compile_report():  # the model's forward compiles here first
            self._run_eval("validation", val_loaders, limit=limit)
        self._call_callbacks("on_sanity_check_end")
        self.sanity_checking = False

    # == validation, test and predict ================================================================================
    def _run_eval(self, stage, loaders, limit=None):
        """Run ``<stage>_step`` over every loader; returns one dict of epoch metrics per loader (predict: outputs)."""
        self._read_pending()  # the training steps before a validation count (and are checked) first
        module = self.module
        step_fn = {"validation": module.validation_step, "test": module.test_step,
                   "predict": module.predict_step}[stage]
        kind = {"validation": "val", "test": "test", "predict": "predict"}[stage]
        takes_idx = len(inspect.signature(step_fn).parameters) >= 3  # (batch, batch_idx, dataloader_idx)
        module.set_train(False)
        counts = []  # batches per loader, known before the hooks so a progress bar can show the total
        for loader in loaders:
            total = loader_length(loader)
            limited = limit_batches(f"limit_{kind}_batches", self.limits[kind], total)
            counts.append(min(limit, limited) if limit is not None else limited)
        setattr(self, "num_sanity_val_batches" if self.sanity_checking else f"num_{kind}_batches", counts)
        self._call(f"on_{stage}_start")
        self._call(f"on_{stage}_epoch_start")
        means = [EpochMeans() for _ in loaders]
        predictions = []
        for dl_idx, (loader, n) in enumerate(zip(loaders, counts)):
            for batch_idx, batch in iterate_batches(loader, n, 0):
                self._batch_size = batch_size_of(batch)
                self._log_target = means[dl_idx]
                args = (batch, batch_idx) if len(loaders) == 1 or not takes_idx else (batch, batch_idx, dl_idx)
                self._call(f"on_{stage}_batch_start", batch, batch_idx)
                out = step_fn(*args)
                if stage == "predict":
                    predictions.append(out)
                self._call(f"on_{stage}_batch_end", out, batch, batch_idx)
        self._log_target = means[0]  # values logged from the epoch-end hooks count for the first loader
        self._call(f"on_{stage}_epoch_end")
        self._log_target = None
        results = []
        for dl_idx, m in enumerate(means):
            suffix = "" if len(loaders) == 1 else f"/dataloader_idx_{dl_idx}"
            results.append({f"{k}{suffix}": v for k, v in self._reduce_means(m).items()})
        if stage != "predict" and not self.sanity_checking:
            self._validated = self._validated or stage == "validation"
            merged = {k: v for r in results for k, v in r.items()}
            self.callback_metrics.update(merged)
            self.progress_bar_metrics.update({k: v for k, v in merged.items() if k in self._prog_bar_names})
            self.log_metrics(merged)
        self._call(f"on_{stage}_end")
        module.set_train(True)
        return predictions if stage == "predict" else results

    def _reduce_means(self, means):
        """Epoch means over all ranks: every rank's weighted sums are added before dividing."""
        if not self.distributed or self.world_size == 1:
            return means.means()
        from mindspore import ops

        names = sorted(means.sums)
        packed = Tensor(np.array([means.sums[n] for n in names] + [means.weights[n] for n in names], np.float32))
        total = ops.AllReduce()(packed).asnumpy()
        k = len(names)
        return {n: float(total[i] / total[k + i]) if total[k + i] else math.nan for i, n in enumerate(names)}

    # == logging ======================================================================================================
    _prog_bar_names = set()

    def log_from_module(self, name, value, prog_bar=False, on_step=None, on_epoch=None, batch_size=None):
        """Where ``Module.log`` lands: step values go to the loggers now, epoch values into the running means.
        Defaults as Lightning's: per step in a (manual optimization) training_step, per epoch everywhere else."""
        on_step = self._step_logging_defaults if on_step is None else on_step
        on_epoch = not self._step_logging_defaults if on_epoch is None else on_epoch
        value = to_float(value, name)
        if prog_bar:
            self._prog_bar_names = self._prog_bar_names | {name}
            self.progress_bar_metrics[name] = value
        if self._log_target is None:  # outside any step: a plain value
            self.callback_metrics[name] = value
            self.log_metrics({name: value})
            return
        step_name = f"{name}_step" if on_step and on_epoch else name
        epoch_name = f"{name}_epoch" if on_step and on_epoch else name
        if on_step and not self.sanity_checking:
            self.callback_metrics[step_name] = value
            self.log_metrics({step_name: value})
        if on_epoch:
            self._log_target.add(epoch_name, value, batch_size or self._batch_size or 1)

    def log_metrics(self, metrics):
        """One logging event at the current global step, handed to every callback's ``on_log_metrics``."""
        if not metrics or not self.is_global_zero:
            return
        self.logged_metrics.update(metrics)
        for cb in self.callbacks:
            cb.on_log_metrics(self, self.module, dict(metrics), self.global_step)

    # == hooks ========================================================================================================
    def _call_callbacks(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(self, self.module, *args)

    def _call(self, hook, *args):
        """Callbacks first, in list order, then the module: Lightning's order at every point."""
        self._call_callbacks(hook, *args)
        method = getattr(self.module, hook, None)
        if method is not None:
            method(*args)

    # == setup and teardown ==========================================================================================
    def _check_module(self, model, training=True):
        if not isinstance(model, Module):
            raise MisconfigurationError(f"the model must be an msforge.Module, got {type(model).__name__}")
        if training and self.mode == "graph" and model.automatic_optimization:  # manual: training_step is host code
            line = find_self_call(type(model).training_step)
            if line is not None:
                raise MisconfigurationError(
                    f"{type(model).__name__}.training_step calls self(...) (line {line}), which MindSpore cannot "
                    "compile inside the train step: write self.construct(...) instead")

    def _start(self, stage, model, datamodule):
        self._configure_context()
        if self.world_size > 1 and self.version is None:
            self._agree_on_version()
        if self.seed is not None:
            seed_everything(self.seed)
        self.state = stage
        self.module = model
        model.trainer = self
        if datamodule is not None:
            self.datamodule = datamodule
            datamodule.trainer = self
            if self.is_global_zero:
                datamodule.prepare_data()
            datamodule.setup(stage)
        self._call("setup", stage)

    def _agree_on_version(self):
        """All ranks take rank 0's version folder: only rank 0 writes, but every rank resolves paths inside it."""
        from mindspore import ops

        n = ckpt_io.next_version(os.path.join(self.default_root_dir, self.name)) if self.is_global_zero else 0
        n = int(ops.AllReduce()(Tensor(np.array([n], np.float32))).asnumpy()[0])  # CPU (MCCL): float only
        self.version = f"version_{n}"

    def _finish(self, stage):
        self._call("teardown", stage)
        if self.datamodule is not None:
            self.datamodule.teardown(stage)
        self.state = None

    def _configure_context(self):
        ms.set_context(mode=MODES[self.mode])
        if self.device_target != "auto":
            ms.set_device(self.device_target)
        if self.deterministic:
            ms.set_context(deterministic="ON")
        if self.distributed and self.world_size == 1:
            from mindspore.communication import get_group_size, get_rank, init

            init()
            self.global_rank, self.world_size = get_rank(), get_group_size()
            ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                         device_num=self.world_size)

    def _configure_optimizers(self, model):
        """``configure_optimizers()``'s answer in any of Lightning's forms -> ``([optimizer, ...], [scheduler entry])``:
        an optimizer; a dict with "optimizer" and "lr_scheduler"; a list of optimizers or of such dicts; or
        ``([optimizers], [schedulers])``."""
        config = model.configure_optimizers()
        name = type(model).__name__
        if isinstance(config, (tuple, list)) and len(config) == 2 and all(isinstance(c, (tuple, list)) for c in config):
            optimizers, scheds = config  # Lightning's ([optimizer], [scheduler]) form
            items = [{"optimizer": opt} for opt in optimizers] + [{"lr_scheduler": sch} for sch in scheds]
        elif isinstance(config, (tuple, list)):
            items = [c if isinstance(c, dict) else {"optimizer": c} for c in config]
        else:
            items = [config if isinstance(config, dict) else {"optimizer": config}]
        optimizers, schedulers = [], []
        for item in items:
            if not set(item) & {"optimizer", "lr_scheduler"}:
                raise MisconfigurationError(f"configure_optimizers() of {name} returned a dict without 'optimizer': "
                                            f"keys {sorted(item)}")
            if "optimizer" in item:
                optimizers.append(item["optimizer"])
            if item.get("lr_scheduler") is not None:
                schedulers.append(self._scheduler_entry(item["lr_scheduler"]))
        for optimizer in optimizers:
            if not isinstance(optimizer, nn.Optimizer):
                raise MisconfigurationError(
                    f"configure_optimizers() of {name} returned {type(optimizer).__name__}; return a mindspore.nn "
                    "optimizer or {'optimizer': opt, 'lr_scheduler': ...}")
        if not optimizers:
            raise MisconfigurationError(f"configure_optimizers() of {name} returned no optimizer")
        if len(optimizers) > 1 and model.automatic_optimization:
            raise MisconfigurationError(
                f"configure_optimizers() of {name} returned {len(optimizers)} optimizers; several optimizers need "
                "manual optimization: set self.automatic_optimization = False in __init__ and update each with "
                "self.manual_step(optimizer, loss_fn, *inputs) in training_step(batch, batch_idx)")
        return optimizers, schedulers

    @staticmethod
    def _scheduler_entry(sched):
        sched = sched if isinstance(sched, dict) else {"scheduler": sched}
        unknown = set(sched) - {"scheduler", "interval", "frequency", "monitor", "name", "strict"}
        if unknown:
            raise MisconfigurationError(f"lr_scheduler has unknown keys {sorted(unknown)}; valid: scheduler, "
                                        "interval, frequency, monitor, name, strict")
        entry = {"interval": "epoch", "frequency": 1, "monitor": None, "strict": True, **sched}
        choice("lr_scheduler interval", entry["interval"], ("epoch", "step"))
        if not isinstance(entry["strict"], bool):
            raise MisconfigurationError(f"lr_scheduler strict={entry['strict']!r}: must be True or False", key="strict")
        frequency = entry["frequency"]
        if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
            raise MisconfigurationError(f"lr_scheduler frequency={frequency!r}: must be an int >= 1 (steps "
                                        "or epochs between scheduler steps)", key="frequency")
        return entry

    def _apply_precision(self, model):
        """Give ``model`` the Trainer's precision before its first compiled step, in every stage: a test in a new
        process computes as the test after fit did (Lightning's precision covers evaluation too). Once per model and
        precision: the settings are constants of the graphs compiled from then on. A model a Trainer of another
        precision ran before gets this one's: bfloat16 convolutions are switched off or on; a cast by MindSpore's
        mixed precision cannot be undone, so that case is refused."""
        before = getattr(model, "_msforge_precision", None)
        if before == self.precision:
            return
        if getattr(model, "_msforge_cast_to", None) is not None:
            raise MisconfigurationError(
                f"precision={self.precision!r}: this model was cast to {model._msforge_cast_to} for an earlier "
                f"Trainer's precision={before!r} (MindSpore's auto_mixed_precision, which cannot be undone); build "
                "the model anew, or load its checkpoint into a new one", key="precision")
        if before is not None:
            for conv in layers.kernel_convolutions(model):
                conv.set_bfloat16(False)
            for _, cell in model.cells_and_names():  # graphs compiled with the old settings as constants
                cell.compile_cache.clear()
        compute_dtype = self._compute_dtype(model)
        if compute_dtype is not None:
            ms.amp.auto_mixed_precision(model, "O2", dtype=compute_dtype)
            model._msforge_cast_to = compute_dtype
        model._msforge_precision = self.precision

    def _compute_dtype(self, model):
        """The dtype MindSpore's mixed precision computes in, or None (float32). "bf16-mixed" where MindSpore has no
        bfloat16 MatMul/Conv2D kernels (2.10's CPU backend, even on CPUs with AVX512_BF16: bench/bf16_kernels.py):
        msforge.layers.Conv2d multiplies in bfloat16 where the CPU can (the rest stays float32); a model without
        such layers, or a CPU without bfloat16 instructions, trains in float32 with one warning."""
        dtype = PRECISIONS[self.precision]
        if dtype == ms.bfloat16 and not bf16_kernels(ms.get_context("device_target")):
            if layers.use_bfloat16_convolutions(model):
                return None
            why = (layers.bfloat16_convolutions_missing() if layers.kernel_convolutions(model)
                   else "the model has no msforge.layers.Conv2d")
            warnings.warn(f"precision='bf16-mixed': MindSpore {ms.__version__} has no bfloat16 MatMul/Conv2D kernels "
                          f"on {ms.get_context('device_target')} and {why}; training in float32", RuntimeWarning,
                          stacklevel=3)
            return None
        return dtype

    def _build_train_step(self, model, optimizer, loss_fn=None, scale_state=None):
        reducer = None
        if self.distributed and self.world_size > 1:
            reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=self.world_size)
        step = TrainStep(model, optimizer, accumulate_grad_batches=self.accumulate_grad_batches,
                         gradient_clip_val=self.gradient_clip_val,
                         gradient_clip_algorithm=self.gradient_clip_algorithm,
                         loss_scale=self.loss_scale_config, grad_reducer=reducer, loss_fn=loss_fn,
                         scale_state=scale_state)
        step.set_train(True)
        step.has_run, step.names = False, None
        return step

    def _prepare_manual_optimization(self, model):
        """Manual optimization: steps are compiled on first use by ``manual_step``; what a checkpoint holds of them
        (each optimizer's loss scale) exists from the start so a resume can restore it."""
        if self.accumulate_grad_batches > 1:
            raise MisconfigurationError(f"accumulate_grad_batches={self.accumulate_grad_batches} with manual "
                                        "optimization: accumulate in training_step yourself, or use automatic "
                                        "optimization")
        if self.steps_per_execution > 1:
            raise MisconfigurationError(f"steps_per_execution={self.steps_per_execution} with manual optimization: "
                                        "training_step runs on the host once per batch; use steps_per_execution=1",
                                        key="steps_per_execution")
        self._multi_step = None
        self.train_step, self._manual_steps = None, {}
        config = self.loss_scale_config
        self._scale_states = [LossScaleState(config, prefix=f"optimizer_{i}.") if config is not None else None
                              for i in range(len(self.optimizers))]
        self.loss_scale_values = [None] * len(self.optimizers)

    # == data =========================================================================================================
    def _train_loader(self, train_dataloaders, datamodule):
        loader = self._loaders("train", train_dataloaders, datamodule)[0]
        if self.overfit_batches:
            n = limit_batches("overfit_batches", self.overfit_batches, loader_length(loader))
            loader = list(itertools.islice(iterate_batches(loader, n, 0), n))
            loader = [batch for _, batch in loader]
        self.train_dataloader = loader
        self.num_training_batches = limit_batches("limit_train_batches", self.limits["train"], loader_length(loader))
        if self.num_training_batches == 0:
            raise MisconfigurationError("the training dataloader gives no batches (check its length and "
                                        "limit_train_batches)")
        interval, n = self.val_check_interval, self.num_training_batches
        if (isinstance(interval, int) and not isinstance(interval, bool) and self.check_val_every_n_epoch is not None
                and not math.isinf(n) and interval > n and not self.overfit_batches):  # Lightning refuses it too
            raise MisconfigurationError(
                f"val_check_interval={interval} is more than the {n} training batches of an epoch, so it would never "
                f"come round; use at most {n}, a float fraction of the epoch, or check_val_every_n_epoch=None to "
                "count batches across epochs", key="val_check_interval")
        return loader

    def _loaders(self, kind, given, datamodule, required=True):
        if given is None and datamodule is not None:
            given = getattr(datamodule, {"train": "train_dataloader", "val": "val_dataloader",
                                         "test": "test_dataloader", "predict": "predict_dataloader"}[kind])()
        if given is None:
            if required:
                raise MisconfigurationError(f"no {kind} dataloader: pass one or a datamodule with {kind}_dataloader()")
            return []
        loaders = list(given) if isinstance(given, (list, tuple)) and not is_batch_list(given) else [given]
        if self.distributed and self.world_size > 1:
            for loader in loaders:
                if isinstance(loader, DataLoader):
                    loader.shard(self.global_rank, self.world_size)
        return loaders

    # == checkpoints ==================================================================================================
    def save_checkpoint(self, path, weights_only=False):
        """Write one .ckpt file atomically (rank 0 only); returns its path."""
        if not self.is_global_zero:
            return path
        state = self._checkpoint_state(weights_only)
        self._call("on_save_checkpoint", state)
        return ckpt_io.save(path, self._checkpoint_params(weights_only), state)

    def _checkpoint_params(self, weights_only=False, with_callbacks=True):
        """``[(name, Parameter)]`` a checkpoint file holds, and a resume restores: the module's weights (weights only),
        or the whole training state: automatic optimization's step cell (weights, optimizer, loss scale), or under
        manual optimization the weights and each optimizer's own state as ``optimizer_<i>.<name>``. Callbacks'
        ``checkpoint_parameters`` add names or hold the Parameter stored under a weight's name (averaged weights)."""
        cell = self.train_step if self.train_step is not None and not weights_only else self.module
        params = dict(ckpt_io.named_params(cell))
        if not weights_only and self.train_step is None and self._scale_states:  # manual optimization
            weights = {id(p) for p in params.values()}
            for i, (optimizer, scale) in enumerate(zip(self.optimizers, self._scale_states)):
                cells = [optimizer] + ([scale] if scale is not None else [])
                for cell in cells:
                    for name, p in ckpt_io.named_params(cell):
                        if id(p) not in weights:
                            params[name if cell is scale else f"optimizer_{i}.{name}"] = p
        for cb in self.callbacks if with_callbacks else []:
            for name, p in cb.checkpoint_parameters(self, self.module):
                if name in params or not weights_only:
                    params[name] = p
        return list(params.items())

    def _checkpoint_state(self, weights_only):
        self._read_pending()
        epoch_done = self._epoch_done
        state = {
            "msforge_version": _version("msforge"), "mindspore_version": ms.__version__,
            "weights_only": weights_only,
            "epoch": self.current_epoch + (1 if epoch_done else 0),
            "global_step": self.global_step,
            "batches_done": 0 if epoch_done else self._batches_done,
            "total_batches": self._total_batches,
            "skipped_steps": self.skipped_steps,
            "fit_seconds": self._fit_seconds(),
            "train_means": EpochMeans().state_dict() if epoch_done else self._train_means.state_dict(),
            "callback_metrics": dict(self.callback_metrics),  # what schedulers/callbacks read next (e.g. val_loss)
            "hparams": dict(getattr(self.module, "hparams", {}) or {}),
        }
        if not weights_only:
            state["lr_schedulers"] = [c["scheduler"].state_dict() for c in self.lr_schedulers]
            state["callbacks"] = {cb.state_key: cb.state_dict() for cb in self.callbacks}
            if self.datamodule is not None:
                state["datamodule"] = self.datamodule.state_dict()
        return state

    def _resolve_ckpt_path(self, ckpt_path):
        if ckpt_path not in ("last", "best"):
            return os.path.abspath(ckpt_path)
        found = [cb for cb in self.checkpoint_callbacks]
        if ckpt_path == "last":
            path = next((cb.last_model_path for cb in found if cb.last_model_path), None) or ckpt_io.find_last(
                os.path.join(self.default_root_dir, self.name), [getattr(cb, "dirpath", None) for cb in found])
            if not path:
                raise MisconfigurationError(f"ckpt_path='last': no last.ckpt found under "
                                            f"{os.path.join(self.default_root_dir, self.name)}")
            return path
        path = next((cb.best_model_path for cb in found if cb.best_model_path), None)
        if not path:
            last = ckpt_io.find_last(os.path.join(self.default_root_dir, self.name),
                              [getattr(cb, "dirpath", None) for cb in found])
            if last:
                _, state = ckpt_io.load(last)
                path = next((s.get("best_model_path") for s in state.get("callbacks", {}).values()
                             if isinstance(s, dict) and s.get("best_model_path")), None)
        if not path:
            raise MisconfigurationError("ckpt_path='best': there is no best checkpoint (ModelCheckpoint needs a "
                                        "monitor to rank checkpoints, and must have saved one)")
        return path

    def read_checkpoint(self, ckpt_path):
        """Resolve and read a checkpoint before anything is written, so a bad path costs nothing."""
        path = self._resolve_ckpt_path(ckpt_path)
        try:
            params, state = ckpt_io.load(path)
        except ckpt_io.CheckpointError as err:
            raise MisconfigurationError(str(err)) from None
        return path, params, state

    @staticmethod
    def _check_resumable(path, params, state):
        """Before anything is written: a checkpoint without training state cannot resume a fit."""
        if state.get("weights_only", not state):
            kind = "weights only (a plain MindSpore checkpoint)" if not state else "weights only"
            raise MisconfigurationError(f"checkpoint {path!r} holds {kind} and cannot resume training; evaluate "
                                        "with it instead (validate/test/predict with ckpt_path; experiments/run.py "
                                        "--stage test --ckpt PATH)")

    def _restore(self, path, params, state, train_loader):
        """Put the trainer, step cell, schedulers, callbacks and data back where the checkpoint was taken."""
        self._check_resumable(path, params, state)
        try:  # callbacks' own names may be missing (a checkpoint saved without them): they handle that on load
            ckpt_io.check_match(path, params, self._checkpoint_params(with_callbacks=False))
        except ckpt_io.CheckpointError as err:
            raise MisconfigurationError(str(err)) from None
        targets = self._checkpoint_params()
        changed = ckpt_io.changed_hparams(state.get("hparams"), getattr(self.module, "hparams", None))
        if changed:  # e.g. a new learning rate to fine-tune with is legitimate, but the resume is no longer exact
            warnings.warn(f"resuming from {path} with hyper-parameters that differ from the checkpoint's: "
                          f"{changed}; the run continues with the new values", stacklevel=3)
        ckpt_io.assign(targets, params)
        self.current_epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self._carried_fit_time = float(state.get("fit_seconds", 0.0))
        self._resume_batches = self._batches_done = state["batches_done"]
        self._total_batches = state.get("total_batches", self.current_epoch * self.num_training_batches
                                        + self._batches_done)
        self._train_means.load_state_dict(state["train_means"])
        self.callback_metrics.update(state.get("callback_metrics", {}))
        if len(state.get("lr_schedulers", [])) != len(self.lr_schedulers):
            raise MisconfigurationError(f"checkpoint {path!r} has {len(state.get('lr_schedulers', []))} LR "
                                        f"schedulers but configure_optimizers() made {len(self.lr_schedulers)}")
        for config, sched_state in zip(self.lr_schedulers, state.get("lr_schedulers", [])):
            config["scheduler"].load_state_dict(sched_state)
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
        if self.datamodule is not None and "datamodule" in state:
            self.datamodule.load_state_dict(state["datamodule"])
        self._call("on_load_checkpoint", state)

    def _load_weights(self, model, path, params, state):
        targets = ckpt_io.named_params(model)
        try:
            ckpt_io.check_match(path, params, targets)
        except ckpt_io.CheckpointError as err:
            raise MisconfigurationError(str(err)) from None
        ckpt_io.assign(targets, params)

    # == SIGTERM / SIGINT =============================================================================================
    def _install_signal_handlers(self):
        self._interrupt_signal, self.interrupted = None, None
        if sys.platform == "win32" or not _in_main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous):
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self._interrupt_signal is not None:
            print(f"msforge: second {name}: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self._interrupt_signal = signum
        print(f"msforge: {name} received: finishing the current step, then saving a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    def _save_on_interrupt(self):
        name = signal.Signals(self._interrupt_signal).name
        self.interrupted = name
        cb = self.checkpoint_callback
        if cb is None:
            print(f"msforge: stopped by {name} at step {self.global_step}; checkpointing is off, nothing saved",
                  file=sys.stderr, flush=True)
            return
        path = cb.save_last_now(self)
        print(f"msforge: stopped by {name} at step {self.global_step}; checkpoint saved to {path}. Resume with "
              f"trainer.fit(..., ckpt_path={path!r}) or experiments/run.py CONFIG --ckpt {path}",
              file=sys.stderr, flush=True)


# == small pure helpers ===============================================================================================
@functools.lru_cache(maxsize=None)
def bf16_kernels(device_target):
    """Whether MatMul and Conv2D run in bfloat16 on ``device_target`` (the current one): tried once on 2x2 inputs."""
    from mindspore import ops

    try:
        x = Tensor(np.ones((1, 1, 2, 2), np.float32)).astype(ms.bfloat16)
        ops.matmul(x[0, 0], x[0, 0]).astype(ms.float32).asnumpy()
        ops.conv2d(x, x).astype(ms.float32).asnumpy()
        return True
    except (TypeError, RuntimeError, ValueError):
        return False


@contextlib.contextmanager
def compile_report():
    """Hold back what is written to stderr (file descriptor 2, where MindSpore's C++ side logs) while a graph compiles
    for the first time, and write it out afterwards, unless compiling failed with MindSpore's report: the exception
    carries that report (the traceback of the construct code), so the failure can be one line; MSFORGE_TRACEBACK=1
    shows it all. Anything else (a Python error in a step) keeps what was written."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some embedded interpreters): nothing to hold back
        yield
        return
    reported = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as err:
            reported = any(mark in str(err) for mark in ("Traceback of Net Construct Code", "analyze_fail.ir"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not reported or os.environ.get("MSFORGE_TRACEBACK"):
                held.seek(0)
                text = held.read().decode("utf-8", errors="replace")
                if text:
                    sys.stderr.write(text)
                    sys.stderr.flush()


@functools.lru_cache(maxsize=8)
def mid_epoch_val_points(n_batches, fraction):
    """Batch counts after which a float ``val_check_interval`` validates inside an epoch of ``n_batches``.

    The points are the multiples of ``fraction * n_batches`` rounded down, so 0.25 of 150 batches gives 37, 75 and
    112, and the fourth is the epoch end's own validation (150), not a second one at 148. A point closer than half an
    interval to the epoch end is left to the epoch end's validation, so one run never follows another by a batch or
    two (0.3 of 10 batches: 3, 6 and the end, not 9 and 10)."""
    if math.isinf(n_batches):
        return frozenset()
    step = fraction * n_batches
    if step < 1:  # more than one point per batch: after every batch
        return frozenset(b for b in range(1, n_batches) if b < n_batches - step / 2)
    points = (math.floor(k * step + 1e-9) for k in range(1, math.ceil(1 / fraction) + 1))  # 1e-9: 0.3 * 10 * 3
    return frozenset(p for p in points if p < n_batches - step / 2)


def _first_line(err):
    """The first non-empty line of an exception's message (MindSpore's reports run to pages), or its type."""
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)


def _name(fn):
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def default_callbacks_package():
    """The ``callbacks`` package installed beside msforge, found by its folder: a user's own ``callbacks.py`` earlier on
    ``sys.path`` (the working folder) must neither replace the Trainer's defaults nor break ``Trainer()``."""
    import importlib
    import importlib.util

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "callbacks")

    def ours(module_or_spec):
        origin = getattr(module_or_spec, "__file__", None) or getattr(module_or_spec, "origin", None) or ""
        return os.path.dirname(os.path.abspath(origin)) == folder

    loaded = sys.modules.get("callbacks")
    if loaded is not None:
        if ours(loaded):
            return loaded
    else:
        try:
            spec = importlib.util.find_spec("callbacks")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and ours(spec):
            return importlib.import_module("callbacks")
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        raise MisconfigurationError(f"msforge's callbacks package is missing from {folder}; reinstall msforge")
    private = "msforge_default_callbacks"  # shadowed: load ours under a name of its own (its imports are relative)
    if private not in sys.modules:
        spec = importlib.util.spec_from_file_location(private, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[private] = module
        spec.loader.exec_module(module)
    return sys.modules[private]


def _version(package):
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return "unknown"


def _in_main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()
