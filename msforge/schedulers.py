"""Learning-rate schedulers stepped on the host, as PyTorch's are.

Each one writes the optimizer's learning-rate Parameter with ``ops.assign``: ``Parameter.set_data`` is not seen by a
train step that is already compiled (measured with MindSpore 2.10). MindSpore's own ``LearningRateSchedule`` cells,
passed to the optimizer as its learning rate, keep working and need none of this.
"""
import math

import numpy as np
from mindspore import Tensor, ops


def get_lrs(optimizer):
    """The optimizer's current learning rates as Python floats (one per parameter group)."""
    lr = optimizer.learning_rate
    if optimizer.dynamic_lr:
        step = optimizer.global_step
        cells = lr if optimizer.is_group_lr else [lr]
        return [float(np.asarray(c(step).asnumpy()).reshape(-1)[0]) for c in cells]
    params = lr if optimizer.is_group_lr else [lr]
    return [float(p.asnumpy()) for p in params]


def set_lrs(optimizer, lrs):
    if optimizer.dynamic_lr:
        raise ValueError("this optimizer's learning rate is a LearningRateSchedule cell; a host-stepped scheduler "
                         "cannot also drive it: give the optimizer a float learning rate")
    params = list(optimizer.learning_rate) if optimizer.is_group_lr else [optimizer.learning_rate]
    for p, value in zip(params, lrs):
        ops.assign(p, Tensor(value, p.dtype))


class LRScheduler:
    """Base class: subclasses compute ``lr_at(base_lr)`` from ``self.last_epoch`` (the number of ``step()`` calls).

    A scheduler whose ``follows_max_time`` is true is timed by the fit instead: the Trainer sets ``time_share`` to a
    function giving the share of its ``max_time`` the fit has used so far (0 before the fit starts)."""

    follows_max_time = False
    time_share = None

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lrs = get_lrs(optimizer)
        self.last_epoch = 0
        self._apply()

    def lr_at(self, base_lr):
        raise NotImplementedError

    def step(self, metric=None):
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        set_lrs(self.optimizer, [self.lr_at(b) for b in self.base_lrs])

    def get_last_lr(self):
        return get_lrs(self.optimizer)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_epoch = state["last_epoch"]
        self.base_lrs = list(state["base_lrs"])
        self._apply()


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"StepLR(step_size={step_size!r}): must be >= 1")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def lr_at(self, base_lr):
        return base_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    def __init__(self, optimizer, T_max, eta_min=0.0):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR(T_max={T_max!r}): must be >= 1")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, base_lr):
        t = min(self.last_epoch, self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """PyTorch's OneCycleLR (cosine annealing, two phases): warm up from max_lr/div_factor to max_lr over
    pct_start of total_steps, then anneal to max_lr/(div_factor*final_div_factor).

    ``total_steps="max_time"``: the cycle lasts the Trainer's ``max_time`` instead of a number of steps. At each step
    its position is the share of max_time the fit has used (compilation, validation and the time before a resume
    included), so the rate is annealed when max_time stops the fit, however fast the machine is. The rates then
    depend on the machine's speed: two runs are not step-for-step the same."""

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.follows_max_time = total_steps == "max_time"
        if not self.follows_max_time and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                          or total_steps < 2):
            raise ValueError(f"OneCycleLR(total_steps={total_steps!r}): must be an int >= 2 or 'max_time'")
        if not 0 < pct_start < 1:
            raise ValueError(f"OneCycleLR(pct_start={pct_start!r}): must be in (0, 1)")
        self.max_lr, self.total_steps, self.pct_start = float(max_lr), total_steps, float(pct_start)
        if not self.follows_max_time:
            self.warmup = float(pct_start * total_steps) - 1
        self.initial = self.max_lr / div_factor
        self.final = self.initial / final_div_factor
        super().__init__(optimizer)

    def lr_at(self, base_lr):
        if self.follows_max_time:
            share = min(max(self.time_share(), 0.0), 1.0) if self.time_share is not None else 0.0
            if share <= self.pct_start:
                return _cos_anneal(self.initial, self.max_lr, share / self.pct_start)
            return _cos_anneal(self.max_lr, self.final, (share - self.pct_start) / (1 - self.pct_start))
        t = min(self.last_epoch, self.total_steps - 1)
        if t <= self.warmup:
            return _cos_anneal(self.initial, self.max_lr, t / self.warmup)
        return _cos_anneal(self.max_lr, self.final, (t - self.warmup) / (self.total_steps - 1 - self.warmup))


def _cos_anneal(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when the monitored metric has not improved for ``patience`` steps."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau(mode={mode!r}): use 'min' or 'max'")
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau(factor={factor!r}): must be in (0, 1)")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau(threshold_mode={threshold_mode!r}): use 'rel' or 'abs'")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps = int(cooldown), float(min_lr), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_left = 0
        self.last_epoch = 0

    def _improved(self, value):
        if self.mode == "min":
            bound = self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return value < bound
        bound = self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return value > bound

    def step(self, metric):
        value = float(metric)
        self.last_epoch += 1
        if self._improved(value):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            old = get_lrs(self.optimizer)
            new = [max(lr * self.factor, self.min_lr) for lr in old]
            new = [n if o - n > self.eps else o for o, n in zip(old, new)]
            set_lrs(self.optimizer, new)
            self.cooldown_left, self.num_bad = self.cooldown, 0

    def get_last_lr(self):
        return get_lrs(self.optimizer)

    def state_dict(self):
        return {"best": self.best, "num_bad": self.num_bad, "cooldown_left": self.cooldown_left,
                "last_epoch": self.last_epoch, "lrs": get_lrs(self.optimizer)}

    def load_state_dict(self, state):
        self.best, self.num_bad = state["best"], state["num_bad"]
        self.cooldown_left, self.last_epoch = state["cooldown_left"], state["last_epoch"]
        set_lrs(self.optimizer, state["lrs"])
