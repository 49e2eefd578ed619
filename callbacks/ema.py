"""EMAWeightAveraging: an exponential moving average of the weights, Lightning's callback of that name.

After each optimizer step ``t`` that ``update_every_n_steps`` divides (from ``update_starting_at_step`` on), the average
moves toward the weights: ``avg = decay * avg + (1 - decay) * w``; the first update copies them. Training goes on with
the raw weights; validation sees the averaged ones (swapped in for it and back out), saved checkpoints hold the
averaged weights under the weights' own names (so testing or loading a checkpoint uses them) and the raw ones as
``ema_raw.<name>`` (so a resume continues exactly), and when fit ends the module keeps the averaged weights.

With ``Trainer(steps_per_execution=N)`` the average is updated once at the end of an execution that contains a due
step, from the weights then (the steps inside the execution are not visible to callbacks).

Only trainable weights are averaged; buffers (normalisation statistics, counters) stay as trained. The update is one
compiled graph per step over every weight.
"""
import mindspore as ms
from mindspore import ParameterTuple, Tensor, nn, ops

from msforge import Callback, MisconfigurationError

RAW_PREFIX = "ema_raw."


class EMAWeightAveraging(Callback):
    def __init__(self, decay=0.999, update_every_n_steps=1, update_starting_at_step=None):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise MisconfigurationError(f"EMAWeightAveraging(decay={decay!r}): use a number in [0, 1]")
        for name, value, low in (("update_every_n_steps", update_every_n_steps, 1),
                                 ("update_starting_at_step", update_starting_at_step, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise MisconfigurationError(f"EMAWeightAveraging({name}={value!r}): use an int >= {low}")
        if update_every_n_steps is None:
            raise MisconfigurationError("EMAWeightAveraging(update_every_n_steps=None): use an int >= 1")
        self.decay = float(decay)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.n_averaged = 0  # updates made; 0: no average yet (the module's weights stand for it)
        self._average = None
        self._swapped = False  # the module holds the averaged weights, the average's Parameters the raw ones
        self._last_step = None
        self._restored = False

    def should_update(self, step_idx):
        """Lightning's rule: from ``update_starting_at_step`` on, every ``update_every_n_steps``-th step."""
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and step_idx % self.update_every_n_steps == 0

    # == hooks ========================================================================================================
    def setup(self, trainer, module, stage):
        if stage == "fit":  # before a resume restores into the average's Parameters
            self._average = _Average(module.trainable_params())
            self.n_averaged, self._swapped, self._restored = 0, False, False

    def on_train_start(self, trainer, module):
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        # an optimizer step was made, one that averages among them (steps_per_execution: several steps per batch end)
        if step != self._last_step and any(self.should_update(s) for s in range(self._last_step + 1, step + 1)):
            decay = 0.0 if self.n_averaged == 0 else self.decay
            self._average(Tensor(decay, ms.float32))
            self.n_averaged += 1
        self._last_step = step

    def on_validation_epoch_start(self, trainer, module):
        if trainer.state == "fit" and self.n_averaged and not self._swapped:
            self._swap()

    def on_validation_epoch_end(self, trainer, module):
        if trainer.state == "fit" and self._swapped:
            self._swap()

    def on_train_end(self, trainer, module):
        if self.n_averaged and not self._swapped:  # fit ends with the averaged weights in the module
            self._average.copy_into_weights()

    def on_exception(self, trainer, module, exception):
        if self._swapped:  # the raw weights back where training left them
            self._swap()

    def teardown(self, trainer, module, stage):
        if stage == "fit":
            self._average = None

    # == checkpoints ==================================================================================================
    def checkpoint_parameters(self, trainer, module):
        if self._average is None:
            return []
        if not self.n_averaged and not self._swapped:  # no update yet: the average so far is the weights themselves
            self._average.copy_into_average()
        pairs = []
        for weight, average in zip(self._average.weights, self._average.averaged):
            averaged, raw = (weight, average) if self._swapped else (average, weight)
            pairs += [(weight.name, averaged), (RAW_PREFIX + weight.name, raw)]
        return pairs

    def state_dict(self):
        return {"n_averaged": self.n_averaged}

    def load_state_dict(self, state):
        self.n_averaged = int(state.get("n_averaged", 0))
        self._restored = True

    def on_load_checkpoint(self, trainer, module, checkpoint):
        if self._average is not None and not self._restored:
            # saved without this callback: the file's weights went into the average's Parameters; start from them
            self._average.copy_into_weights()
            self.n_averaged = 0

    def _swap(self):
        self._average.swap()
        self._swapped = not self._swapped


class _Average(nn.Cell):
    """The averaged copies of ``weights`` (named ``ema.<name>``) and the compiled update; swap and copy on the host."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = ParameterTuple(weights)
        self.averaged = self.weights.clone(prefix="ema", init="same")
        for average in self.averaged:
            average.requires_grad = False

    def construct(self, decay):
        for weight, average in zip(self.weights, self.averaged):
            ops.assign(average, average * decay + weight * (1.0 - decay))
        return decay

    def swap(self):
        for weight, average in zip(self.weights, self.averaged):
            held = weight.value().copy()
            ops.assign(weight, average)
            ops.assign(average, held)

    def copy_into_weights(self):
        for weight, average in zip(self.weights, self.averaged):
            ops.assign(weight, average)

    def copy_into_average(self):
        for weight, average in zip(self.weights, self.averaged):
            ops.assign(average, weight)
