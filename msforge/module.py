"""Module: a mindspore.nn.Cell with Lightning's training hooks."""
import ast
import inspect
import textwrap

from mindspore import nn


class AttributeDict(dict):
    """A dict whose keys are also attributes: ``hparams.lr`` is ``hparams["lr"]``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"hparams has no {key!r}; it has {sorted(self)}") from None

    def __setattr__(self, key, value):
        self[key] = value


class Module(nn.Cell):
    """Subclass this as you would ``LightningModule``.

    ``training_step(batch)`` is compiled into the train step (graph mode by default), so write it like ``construct``:
    MindSpore operations only, returning the loss Tensor or a dict with ``"loss"`` and more scalar Tensors (each extra
    key is logged as a training metric). Inside it call ``self.construct(x)``, not ``self(x)``: MindSpore cannot
    compile a Cell calling itself there.

    Manual optimization (several optimizers, GANs): set ``self.automatic_optimization = False`` in ``__init__``;
    ``configure_optimizers`` may then return several optimizers, and ``training_step(batch, batch_idx)`` runs on the
    host, updating with ``self.manual_step(optimizer, loss_fn, *inputs)`` for each of ``self.optimizers()``. Each
    ``loss_fn`` is compiled like a graph-mode ``training_step`` (``self.construct``, not ``self(x)``); the module steps
    its own schedulers (``self.lr_schedulers()``).

    ``validation_step``, ``test_step`` and ``predict_step`` run on the host: they may call ``self(x)`` (a compiled
    forward), convert to numpy and report with ``self.log``.
    """

    automatic_optimization = True  # False: training_step(batch, batch_idx) steps the optimizers with manual_step

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trainer = None
        self.hparams = AttributeDict()

    # -- steps -----------------------------------------------------------------------------------------------------
    def training_step(self, batch):
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(self, batch)")

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def predict_step(self, batch, batch_idx):
        """Default: the model's output for the batch's first item (the inputs); override for other layouts."""
        return self(batch[0]).asnumpy()

    def configure_optimizers(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement configure_optimizers() returning a mindspore optimizer, e.g. "
            "nn.Adam(self.trainable_params(), learning_rate=1e-3)"
        )

    # -- manual optimization ---------------------------------------------------------------------------------------
    def optimizers(self):
        """The optimizers of ``configure_optimizers``: the one, or a list of several (Lightning's convention)."""
        optimizers = self._running_trainer("optimizers()").optimizers
        return optimizers[0] if len(optimizers) == 1 else list(optimizers)

    def lr_schedulers(self):
        """The schedulers of ``configure_optimizers``: None, the one, or a list of several."""
        schedulers = [c["scheduler"] for c in self._running_trainer("lr_schedulers()").lr_schedulers]
        return None if not schedulers else schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_step(self, optimizer, loss_fn, *inputs):
        """Update ``optimizer``'s parameters by the gradients of ``loss_fn(*inputs)`` with respect to them only, with
        the Trainer's gradient clipping, loss scaling (a scale per optimizer) and precision; returns the loss Tensor.

        ``loss_fn`` is compiled once per (optimizer, loss_fn): pass the same function object every step (a method
        such as ``self.generator_loss``) and everything that changes between steps as ``inputs`` Tensors: values a
        function reads from outside its arguments are compiled in as constants."""
        return self._running_trainer("manual_step()").manual_step(optimizer, loss_fn, inputs)

    def _running_trainer(self, what):
        if self.trainer is None:
            raise RuntimeError(f"{what} was called outside a Trainer run")
        return self.trainer

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, name, value, prog_bar=False, on_step=None, on_epoch=None, batch_size=None):
        """Report a metric from a host-side step or hook; epoch values are batch-size-weighted means. By default a
        value is logged per step in a manual-optimization ``training_step`` and per epoch everywhere else."""
        if self.trainer is None:
            raise RuntimeError(f"self.log({name!r}) was called outside a Trainer run")
        self.trainer.log_from_module(name, value, prog_bar=prog_bar, on_step=on_step, on_epoch=on_epoch,
                                     batch_size=batch_size)

    def log_dict(self, metrics, **kwargs):
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    def save_hyperparameters(self, *ignore):
        """Record the arguments of the calling ``__init__`` in ``self.hparams`` (except ``ignore``d names)."""
        frame = inspect.currentframe().f_back
        args = inspect.getargvalues(frame)
        values = {name: args.locals[name] for name in args.args if name != "self" and name not in ignore}
        if args.keywords:
            values.update({k: v for k, v in args.locals[args.keywords].items() if k not in ignore})
        self.hparams.update(values)

    def images_for_logging(self, batch):
        """Return ``{tag: array (N, C, H, W) or (N, H, W) in [0, 1]}`` for the TensorBoard callback, or None."""
        return None

    # -- hooks (no-ops), in the order the Trainer calls them -------------------------------------------------------
    def setup(self, stage): pass
    def on_fit_start(self): pass
    def on_train_start(self): pass
    def on_train_epoch_start(self): pass
    def on_train_batch_start(self, batch, batch_idx): pass
    def on_before_optimizer_step(self, optimizer): pass
    def on_train_batch_end(self, outputs, batch, batch_idx): pass
    def on_validation_start(self): pass
    def on_validation_epoch_start(self): pass
    def on_validation_batch_start(self, batch, batch_idx): pass
    def on_validation_batch_end(self, outputs, batch, batch_idx): pass
    def on_validation_epoch_end(self): pass
    def on_validation_end(self): pass
    def on_train_epoch_end(self): pass
    def on_train_end(self): pass
    def on_fit_end(self): pass
    def on_test_start(self): pass
    def on_test_epoch_start(self): pass
    def on_test_batch_start(self, batch, batch_idx): pass
    def on_test_batch_end(self, outputs, batch, batch_idx): pass
    def on_test_epoch_end(self): pass
    def on_test_end(self): pass
    def on_predict_start(self): pass
    def on_predict_epoch_start(self): pass
    def on_predict_batch_start(self, batch, batch_idx): pass
    def on_predict_batch_end(self, outputs, batch, batch_idx): pass
    def on_predict_epoch_end(self): pass
    def on_predict_end(self): pass
    def on_save_checkpoint(self, checkpoint): pass
    def on_load_checkpoint(self, checkpoint): pass
    def teardown(self, stage): pass


def find_self_call(method):
    """Line number of a ``self(...)`` call in ``method``'s source, or None (also None if the source is unavailable)."""
    try:
        source = textwrap.dedent(inspect.getsource(method))
        first_line = inspect.getsourcelines(method)[1]
    except (OSError, TypeError):
        return None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "self":
            return first_line + node.lineno - 1
    return None
