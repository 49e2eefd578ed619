"""LearningRateMonitor: the optimizer's learning rate as a logged metric, as Lightning's callback.

Names: ``lr`` (or the ``"name"`` of the ``lr_scheduler`` config), ``lr/pg<i>`` when the optimizer has several parameter
groups with their own rates. With several optimizers (manual optimization) each gets its own: the ``"name"`` of its
scheduler's config, else ``lr/optimizer_<i>`` (the index of ``configure_optimizers``' order, as in checkpoints).

Step values are the rate the update *used* (read at ``on_train_batch_start``), logged at the global step of that update,
every ``log_every_n_steps`` updates: the same x as the ``train_loss`` it produced. Epoch values are logged at
``on_train_epoch_start`` (the rate of the coming epoch; not again when a run resumes in the middle of that epoch).
"""
from msforge import Callback
from msforge.schedulers import get_lrs

INTERVALS = ("step", "epoch", None)


def lr_metrics(trainer):
    """``{name: lr}`` for the trainer's optimizers (see the module docstring for the names)."""
    optimizers = list(trainer.optimizers) or ([trainer.optimizer] if trainer.optimizer is not None else [])
    metrics = {}
    for i, optimizer in enumerate(optimizers):
        named = [c.get("name") for c in trainer.lr_schedulers if c.get("name") and
                 (len(optimizers) == 1 or getattr(c["scheduler"], "optimizer", None) is optimizer)]
        name = named[0] if named else "lr" if len(optimizers) == 1 else f"lr/optimizer_{i}"
        lrs = get_lrs(optimizer)
        if len(lrs) == 1:
            metrics[name] = lrs[0]
        else:
            metrics.update({f"{name}/pg{j}": lr for j, lr in enumerate(lrs)})
    return metrics


def step_log_due(global_step, step_before, log_every_n_steps):
    """Whether the batch that just ended made an update whose step is a logging step; returns ``(due, reason)``."""
    if global_step == step_before:
        return False, "no optimizer update in this batch (accumulating gradients)"
    if global_step // log_every_n_steps == step_before // log_every_n_steps:  # none passed (steps_per_execution)
        return False, f"no multiple of log_every_n_steps={log_every_n_steps} in steps {step_before + 1}..{global_step}"
    return True, f"update at step {global_step}"


class LearningRateMonitor(Callback):
    """Log the learning rate through ``trainer.log_metrics`` (so TensorBoard and CSV both get it).

    logging_interval: "step" (every ``log_every_n_steps`` updates), "epoch" (each epoch start), or None (per step if a
    scheduler steps per step, else per epoch).
    """

    def __init__(self, logging_interval=None):
        if logging_interval not in INTERVALS:
            raise ValueError(f"LearningRateMonitor(logging_interval={logging_interval!r}) is not supported; use "
                             "'step', 'epoch' or None")
        self.logging_interval = logging_interval
        self._lrs_used = None
        self._step_before = None

    def interval(self, trainer):
        """The interval in effect: the given one, or the finest of the schedulers' intervals when None."""
        if self.logging_interval is not None:
            return self.logging_interval
        return "step" if any(c["interval"] == "step" for c in trainer.lr_schedulers) else "epoch"

    def on_train_epoch_start(self, trainer, module):
        if self.interval(trainer) == "epoch" and trainer._batches_done == 0:  # not again when resuming mid-epoch
            trainer.log_metrics(lr_metrics(trainer))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.interval(trainer) == "step":
            self._lrs_used, self._step_before = lr_metrics(trainer), trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._lrs_used is None:
            return
        due, _ = step_log_due(trainer.global_step, self._step_before, trainer.log_every_n_steps)
        if due:
            trainer.log_metrics(self._lrs_used)
        self._lrs_used = None
