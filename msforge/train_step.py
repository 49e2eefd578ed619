"""The one compiled training step.

``TrainStep.construct`` runs, in this order: forward (``module.training_step``) and gradients of the scaled loss;
accumulation over micro-batches; then, on update steps only: data-parallel gradient reduction, unscaling, the finite
check (an overflowed update is skipped and the dynamic scale adjusted), gradient clipping, the optimizer.

Every feature is a constructor argument, so its branch is a compile-time constant and a plain step compiles with none
of them. Whether a call updates the weights is decided by the host and passed in: a Python ``True`` (a constant) without
accumulation, a bool Tensor with it. (A Python ``False`` would compile a second graph, and MindSpore 2.10 mis-compiles
that one: value_and_grad's aux output gets wired to the wrong value.)
"""
import itertools
from dataclasses import dataclass

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

# The graph returns a dict output as the tuple of its values: MindSpore 2.10's compile cache cannot store a dict
# output ("Cannot export a PyExecute CNode in MindIR", bench/cache_outputs.py), and MultiStep's graph (when it was the
# step unrolled N times) gave a dict back wrong. The names are recorded here while the step compiles (a constexpr
# runs at compile time), per step: () for a Tensor output. A step whose graph was loaded from the compile cache
# records nothing.
_OUTPUT_NAMES = {}
_SLOTS = itertools.count()


@ops.constexpr(reuse_result=False)
def _record_output_names(slot, names):
    _OUTPUT_NAMES[slot] = names
    return True


@dataclass(frozen=True)
class LossScale:
    """Loss scaling: a static ``init`` scale, or a dynamic one that is divided by ``factor`` on overflow (never below 1)
    and multiplied by it after ``window`` clean updates in a row."""

    init: float = 2.0**16
    dynamic: bool = True
    factor: float = 2.0
    window: int = 1000

    @classmethod
    def from_arg(cls, value):
        """Trainer's ``loss_scale`` argument: None (off), a number (static), "dynamic", or a dict of
        init/factor/window ("auto", the Trainer's default, is resolved by the Trainer from its precision)."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"loss_scale={value!r}: use None, a number, 'dynamic' or a dict with init/factor/window")
        if isinstance(value, (int, float)):
            if value <= 0:
                raise ValueError(f"loss_scale={value!r}: a static loss scale must be positive")
            return cls(init=float(value), dynamic=False)
        if value == "dynamic":
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - {"init", "factor", "window"}
            if unknown:
                raise ValueError(f"loss_scale has unknown keys {sorted(unknown)}; valid keys: init, factor, window")
            scale = cls(**{"init": 2.0**16, "factor": 2.0, "window": 1000, **value})
            if scale.init < 1 or scale.factor <= 1 or int(scale.window) < 1:
                raise ValueError(f"loss_scale={value!r}: need init >= 1, factor > 1, window >= 1")
            return scale
        raise ValueError(f"loss_scale={value!r}: use None, a number, 'dynamic' or a dict with init/factor/window")


class LossScaleState(nn.Cell):
    """The dynamic loss scale's two numbers as Parameters (checkpointed with the weights): the scale and the count of
    clean updates since it last changed. ``prefix`` keeps the names of several optimizers' scales apart."""

    def __init__(self, loss_scale: LossScale, prefix=""):
        super().__init__(auto_prefix=False)
        self.loss_scale = Parameter(Tensor(loss_scale.init, ms.float32), name=f"{prefix}loss_scale",
                                    requires_grad=False)
        self.clean_updates = Parameter(Tensor(0, ms.int32), name=f"{prefix}loss_scale_clean_updates",
                                       requires_grad=False)


class TrainStep(nn.Cell):
    """Compiled train step; call as ``step(is_update, batch)`` with batch a tuple of Tensors.

    The loss is ``module.training_step(batch)`` (automatic optimization), or ``loss_fn(*batch)`` when a ``loss_fn`` is
    given (``Module.manual_step``); gradients are taken with respect to ``optimizer.parameters`` only.
    Returns ``(outputs, finite, scale)``: what the loss function returned (a Tensor, or for a dict of scalar Tensors
    the tuple of its values in its key order: ``output_names`` holds the keys), whether the update's gradients were
    finite (always True without loss scaling), and the loss scale after this step.
    """

    def __init__(self, module, optimizer, accumulate_grad_batches=1, gradient_clip_val=None,
                 gradient_clip_algorithm="norm", loss_scale: LossScale = None, grad_reducer=None, loss_fn=None,
                 scale_state: LossScaleState = None):
        # auto_prefix=False keeps the weights' own names (not "module.fc.weight") so checkpoints load into the bare model
        super().__init__(auto_prefix=False)
        self.module = module
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.accumulate = int(accumulate_grad_batches)
        self.micro_weight = 1.0 / self.accumulate  # each micro-batch's share of the accumulated loss
        self.scales_loss = self.accumulate > 1 or loss_scale is not None
        self.clip_val = None if gradient_clip_val is None else float(gradient_clip_val)
        self.clip_by_norm = gradient_clip_algorithm == "norm"
        self.loss_scale_config = loss_scale
        self.grad_reducer = grad_reducer
        self.unpack_batch = loss_fn is not None
        self.loss_fn = loss_fn
        self.output_slot = f"train_step_{next(_SLOTS)}"  # a constant in the graph: where its output names go
        self.grad_fn = ops.value_and_grad(self.forward_values, None, self.weights, has_aux=True)
        if self.accumulate > 1:
            self.accum_grads = self.weights.clone(prefix="accum_grads", init="zeros")
        if loss_scale is not None:
            state = scale_state if scale_state is not None else LossScaleState(loss_scale)
            self.loss_scale, self.clean_updates = state.loss_scale, state.clean_updates

    def forward(self, batch, factor):
        if self.unpack_batch:
            out = self.loss_fn(*batch)
        else:
            out = self.module.training_step(batch)
        if isinstance(out, dict):
            loss = out["loss"]
        else:
            loss = out
        if self.scales_loss:
            loss = loss * factor
        return loss, out

    def forward_values(self, batch, factor):
        """``forward`` with a dict output as the tuple of its values (in its key order), the keys recorded at compile
        time (``output_names``)."""
        loss, out = self.forward(batch, factor)
        if isinstance(out, dict):
            names, values = (), ()
            for key in out:
                names = names + (key,)
                values = values + (out[key],)
            _record_output_names(self.output_slot, names)
            return loss, values
        _record_output_names(self.output_slot, ())
        return loss, out

    @property
    def output_names(self):
        """The output dict's keys, () for a Tensor output, None before compiling or when MindSpore took the compiled
        graph from its compile cache (the names are not in it: see ``msforge.compile_cache``)."""
        return _OUTPUT_NAMES.get(self.output_slot)

    def construct(self, is_update, batch):
        return self.step(is_update, batch)

    def step(self, is_update, batch):
        # One return statement only: MindSpore 2.10 mis-wires value_and_grad's aux output when construct returns early.
        scale = self.loss_scale * 1.0 if self.loss_scale_config is not None else ops.ones((), ms.float32)
        # one Tensor factor (scale / k): MindSpore 2.10 mis-compiles a Python-float multiply of the aux-carrying loss
        (_, out), grads = self.grad_fn(batch, scale * self.micro_weight)
        finite = ops.ones((), ms.bool_)
        if self.accumulate > 1:
            grads = self._accumulate(grads, is_update)
        if is_update:
            finite = self._update(grads, scale)
        if self.loss_scale_config is not None:
            scale = self.loss_scale * 1.0  # after a dynamic update
        return out, finite, scale

    def _update(self, grads, scale):
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        finite = ops.ones((), ms.bool_)
        if self.loss_scale_config is None:
            self.optimizer(self._clip(grads))
        else:
            grads = tuple(g * (1.0 / scale) for g in grads)
            finite = ops.stack([ops.isfinite(g).all() for g in grads]).all()
            if self.loss_scale_config.dynamic:
                self._update_scale(finite)
            if finite:
                self.optimizer(self._clip(grads))
        return finite

    def _accumulate(self, grads, is_update):
        summed = tuple(a + g for a, g in zip(self.accum_grads, grads))
        keep = ops.logical_not(is_update).astype(ms.float32)  # an update consumes the sum: buffers restart at zero
        for a, s in zip(self.accum_grads, summed):
            ops.assign(a, s * keep)
        return summed

    def _clip(self, grads):
        if self.clip_val is None:
            return grads
        if self.clip_by_norm:
            return ops.clip_by_global_norm(grads, self.clip_val)
        return tuple(ops.clip_by_value(g, -self.clip_val, self.clip_val) for g in grads)

    def _update_scale(self, finite):
        cfg = self.loss_scale_config
        scale, clean = self.loss_scale, self.clean_updates
        clean = ops.select(finite, clean + 1, ops.zeros_like(clean))
        grow = clean >= cfg.window
        grown = ops.select(grow, scale * cfg.factor, scale)
        shrunk = ops.maximum(scale / cfg.factor, ops.ones_like(scale))
        ops.assign(self.loss_scale, ops.select(finite, grown, shrunk))
        ops.assign(self.clean_updates, ops.select(grow, ops.zeros_like(clean), clean))


class MultiStep(nn.Cell):
    """``Trainer(steps_per_execution=N)``: N train steps in one compiled call, so the host is visited once per N
    optimizer steps (Keras's ``steps_per_execution``). Call as ``multi(is_updates, lrs, batches)``:

    * ``batches``: the N batches' Tensors, each stacked on a new first axis of length N;
    * ``is_updates``: a bool Tensor (N,) with gradient accumulation (which steps update), else ``None``;
    * ``lrs``: a float32 Tensor (N, len(lr_params)), the learning rate each step uses (host schedulers stepping per
      step are stepped ahead on the host, so each step uses the rate it would use one step at a time), or ``None``.

    Returns ``(outputs, skipped, scale)``: the N steps' outputs stacked (a Tensor (N,) for a loss, for a dict the
    tuple of its values' stacks in the dict's key order), how many updates were skipped (non-finite
    gradients under loss scaling), and the loss scale after the last step.

    The first step runs before a graph ``while`` loop over the others (it gives the outputs' structure to stack), so
    the graph holds two copies of the step whatever N is. The step unrolled N times compiled slower as N grew and ran
    slower too (at N=32 1.8x fewer steps/s on a tiny MLP, MindSpore 2.10 CPU: bench/multistep.py).
    """

    def __init__(self, step: TrainStep, steps, lr_params=()):
        super().__init__(auto_prefix=False)  # the weights keep their names
        self.step = step
        self.steps = int(steps)
        self.lr_params = tuple(lr_params)
        self.per_step_update = step.accumulate > 1

    def construct(self, is_updates, lrs, batches):
        first = Tensor(0, ms.int32)
        out, skipped, scale = self._one_step(first, is_updates, lrs, batches)
        stacks = self._put(self._empty(out), first, out)
        i = Tensor(1, ms.int32)
        while i < self.steps:
            out, skipped_now, scale = self._one_step(i, is_updates, lrs, batches)
            skipped = skipped + skipped_now
            stacks = self._put(stacks, i, out)
            i = i + 1
        return stacks, skipped, scale

    def _one_step(self, i, is_updates, lrs, batches):
        """Step ``i`` of the execution: its learning rates, its batch; returns (outputs, 1 if skipped else 0, scale)."""
        for j in range(len(self.lr_params)):
            ops.assign(self.lr_params[j], lrs[i][j])
        batch = ()
        for item in batches:
            batch = batch + (item[i],)
        is_update = is_updates[i] if self.per_step_update else True
        out, finite, scale = self.step.step(is_update, batch)
        skipped = ops.zeros((), ms.bool_)  # only loss scaling skips updates
        if self.step.loss_scale_config is not None:
            skipped = ops.logical_not(finite)
            if self.per_step_update:
                skipped = ops.logical_and(is_update, skipped)
        return out, skipped.astype(ms.int32), scale

    def _empty(self, out):
        """Zeros (N,) per output value (a Tensor, or a tuple of them for a dict output)."""
        if isinstance(out, tuple):
            stacks = ()
            for value in out:
                stacks = stacks + (ops.zeros((self.steps,), value.dtype),)
            return stacks
        return ops.zeros((self.steps,), out.dtype)

    def _put(self, stacks, i, out):
        """The stacks with step ``i``'s outputs written at position ``i``."""
        where = i.reshape((1, 1))
        if isinstance(out, tuple):
            updated = ()
            for k in range(len(out)):
                updated = updated + (ops.tensor_scatter_update(stacks[k], where, out[k].reshape((1,))),)
            return updated
        return ops.tensor_scatter_update(stacks, where, out.reshape((1,)))
