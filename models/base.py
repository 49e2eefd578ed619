"""VideoPredictionModule: what every video-prediction model shares, so a new model is ``__init__`` + ``construct``.

A model maps ``inputs`` (N, in_frames, C, H, W) in [0, 1] to predictions (N, out_frames, C, H, W)::

    class TinyNet(VideoPredictionModule):
        def __init__(self, hidden=16, **kwargs):
            super().__init__(**kwargs)          # lr, weight_decay, loss, in_frames, out_frames, frame_shape
            c = self.frame_shape[0]
            self.net = nn.SequentialCell(nn.Conv2d(self.in_frames * c, hidden, 3), nn.ReLU(),
                                         nn.Conv2d(hidden, self.out_frames * c, 3))

        def construct(self, inputs):
            n, t, c, h, w = inputs.shape
            return self.net(inputs.reshape(n, t * c, h, w)).reshape(n, self.out_frames, c, h, w)

The base does the rest:

* the batch: ``(inputs, targets)`` as the data modules give it, or one video tensor whose first ``in_frames`` frames are
  the inputs and the next ``out_frames`` the targets (:meth:`split_batch`);
* the loss (``loss="mse" | "l1" | "l1+l2" | "bce" | "ssim"``, means over all elements, or weights such as ``{"mse": 1.0, "l1": 0.2}``;
  "mae" and "mse+mae" are the old spellings of "l1" and "l1+l2"), plus the extra terms of :meth:`training_forward`;
* ``training_step`` (compiled), ``validation_step``, ``test_step``, ``predict_step`` (host) and the metrics MSE, MAE,
  SSIM, PSNR of ``msforge.metrics`` (per-frame sums over pixels, averaged over frames); the test stage also logs the
  MSE at each lead time as ``test_mse_frame_<k>``, k = 1 .. out_frames (zero-padded: ``_01`` .. ``_10``);
* images for TensorBoard (:meth:`images_for_logging`: input, target and predicted frames of a validation batch);
* Adam from ``lr`` and ``weight_decay``, with a scheduler from the :meth:`lr_scheduler` hook;
* hyperparameters: the arguments the model was built with (the subclass's own, its ``**kwargs`` and the base's, defaults
  included) land in ``self.hparams`` without a ``save_hyperparameters()`` call, hence in checkpoints and loggers.

One hook for models that need more during training: ``training_forward(inputs, targets) -> (predictions,
extra_losses)``; see its docstring. Host-side state a model needs per step (a scheduled-sampling ratio, a mask) goes
in a non-trainable ``Parameter`` set in ``on_train_batch_start`` with ``ops.assign`` (``Parameter.set_data`` is not
seen by the already compiled train step).
"""
from msforge import Module, metrics  # first: msforge caps oneDNN's ISA before mindspore loads

import difflib
import functools
import inspect
import math
import threading
import typing

import numpy as np
from mindspore import Tensor, nn, ops

__all__ = ["VideoPredictionModule", "LOSSES", "canonical_loss", "loss_terms", "ssim_of_frames", "BASE_ARGUMENTS",
           "DEFAULT_FRAME_SHAPE", "per_frame_key"]

DEFAULT_FRAME_SHAPE = (1, 64, 64)  # (C, H, W) of Moving MNIST

# canonical name -> the names accepted for it ("mae", "mse+mae": ConvLSTMModule's spellings before the base class)
LOSSES = {"mse": ("mse", "l2"), "l1": ("l1", "mae"), "l1+l2": ("l1+l2", "mse+mae"), "bce": ("bce",),
          "ssim": ("ssim",)}
BCE_EPS = 1e-6  # predictions are clamped to [eps, 1 - eps] inside the binary cross-entropy
_LOSS_ALIASES = {alias: name for name, aliases in LOSSES.items() for alias in aliases}
SINGLE_TERMS = ("mse", "l1", "bce", "ssim")  # what a dict of loss weights may name
RESERVED_OUTPUTS = ("loss", "mse", "mae")  # training_step's own keys; extra losses take other names


def canonical_loss(loss):
    """``"mse"``, ``"l1"``, ``"l1+l2"``, ``"bce"`` or ``"ssim"`` for any accepted spelling of ``loss``; one-line ValueError
    otherwise."""
    if not isinstance(loss, str) or loss not in _LOSS_ALIASES:
        raise ValueError(f"loss={loss!r}: expected one of {', '.join(map(repr, _LOSS_ALIASES))}, or a dict of "
                         "weights such as {'mse': 1.0, 'l1': 0.2}")
    return _LOSS_ALIASES[loss]


def loss_terms(loss):
    """``((term, weight), ...)`` of ``loss``: a name (``"l1+l2"`` is ``(("mse", 1.0), ("l1", 1.0))``) or a dict of
    weights over "mse", "l1", "bce" and "ssim" (``{"mse": 1.0, "l1": 0.2}``: a sum weighted so); one-line ValueError for a bad
    name or weight."""
    if not isinstance(loss, dict):
        name = canonical_loss(loss)
        return (("mse", 1.0), ("l1", 1.0)) if name == "l1+l2" else ((name, 1.0),)
    if not loss:
        raise ValueError("loss={}: name at least one term, e.g. {'mse': 1.0, 'l1': 0.2}")
    terms = {}
    for term, weight in loss.items():
        name = canonical_loss(term) if isinstance(term, str) else None
        if name not in SINGLE_TERMS:
            raise ValueError(f"loss={loss!r}: term {term!r} is not one of {', '.join(map(repr, SINGLE_TERMS))}")
        if name in terms:
            raise ValueError(f"loss={loss!r}: term {term!r} is named twice (as {name!r})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise ValueError(f"loss={loss!r}: weight {weight!r} of {term!r} must be a number > 0")
        terms[name] = float(weight)
    return tuple(terms.items())


def valid_window_mean(a, win):
    """The mean of each ``win`` x ``win`` window lying inside the (B, C, H, W) Tensor ``a``, shape (B, C, H - win + 1,
    W - win + 1): a valid average pool, as a 1 x win pool followed by a win x 1 one (faster forward and backward than
    the square ``ops.avg_pool2d`` on CPU). The B*C images are pooled as the channels of one image: the CPU's pooling
    kernels vectorise over channels, so one channel of many images runs ~4x slower (``bench/ssim_loss.py``)."""
    b, c, h, w = a.shape
    a = a.reshape(1, b * c, h, w)
    a = ops.avg_pool2d(ops.avg_pool2d(a, kernel_size=(1, win), stride=1), kernel_size=(win, 1), stride=1)
    return a.reshape(b, c, h - win + 1, w - win + 1)


def ssim_of_frames(predictions, targets, window_mean=valid_window_mean):
    """Mean SSIM of the frames of two (N, T, C, H, W) Tensors, a scalar Tensor: ``msforge.metrics.ssim``'s definition
    (a uniform 7x7 window over each channel, the window's border cropped) in MindSpore operations, so a loss can
    differentiate it. Unlike the metric it does not clip ``predictions`` to [0, 1]: clipping would stop the gradient.
    ``window_mean(a, win)`` computes the windows' means (``bench/ssim_loss.py`` passes the versions it replaced)."""
    win = metrics.SSIM_WIN_SIZE
    n, t, c, h, w = predictions.shape
    x = predictions.reshape(n * t * c, 1, h, w)
    y = targets.reshape(n * t * c, 1, h, w)
    ux, uy = window_mean(x, win), window_mean(y, win)
    uxx, uyy, uxy = window_mean(x * x, win), window_mean(y * y, win), window_mean(x * y, win)
    cov_norm = win * win / (win * win - 1.0)  # sample covariance, as the metric
    c1 = (metrics.SSIM_K1 * metrics.SSIM_DATA_RANGE) ** 2
    c2 = (metrics.SSIM_K2 * metrics.SSIM_DATA_RANGE) ** 2
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    ssim_map = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ops.mean(ssim_map)


def per_frame_key(k, out_frames):
    """The name ``test_mse_frame_<k>`` of the test MSE of the k-th predicted frame (1-based), k zero-padded to the
    digits of ``out_frames`` (``test_mse_frame_01`` .. ``test_mse_frame_10``) so sorted names are in frame order."""
    return f"test_mse_frame_{k:0{len(str(out_frames))}d}"


def _numpy(x):
    return x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float32))


# -- recording the arguments of the __init__ chain -------------------------------------------------------------------
# Each subclass's __init__ is wrapped (see VideoPredictionModule.__init_subclass__). The outermost call, the one of the
# class being built, binds its arguments to its signature and puts them here, keyed by the instance, while the chain
# of __init__s runs; VideoPredictionModule.__init__ takes them into hparams, so they are there right after
# super().__init__(**kwargs) returns. A stack, because a model may build another model in its __init__.
_building = threading.local()


def _pending_args(instance):
    """The arguments recorded for ``instance`` while its __init__ chain runs (a dict to add to), else None."""
    stack = getattr(_building, "stack", [])
    return stack[-1][1] if stack and stack[-1][0] is instance else None


def _call_arguments(signature, args, kwargs):
    """``{name: value}`` of a call, defaults included and ``**kwargs`` flattened; None if the call does not bind."""
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return None  # the __init__ itself raises the error, with Python's message
    bound.apply_defaults()
    values = {}
    for name, value in list(bound.arguments.items())[1:]:
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            values.update(value)
        else:
            values[name] = value
    return values


def _record_defaults(recorded, signature, args, kwargs):
    """Add to ``recorded`` the defaults of the parameters a super().__init__ call leaves out (a parent's own options);
    what the subclass passes explicitly is derived from its own arguments, already recorded."""
    if recorded is None:
        return
    try:
        passed = signature.bind_partial(None, *args, **kwargs).arguments
    except TypeError:
        return  # the __init__ itself raises the error, with Python's message
    for p in list(signature.parameters.values())[1:]:
        if p.name not in passed and p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            recorded.setdefault(p.name, p.default)


def _recording_init(init):
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if type(self).__init__ is not __init__:  # called through super(): the outermost __init__ recorded the call
            _record_defaults(_pending_args(self), signature, args, kwargs)
            return init(self, *args, **kwargs)
        stack = _building.__dict__.setdefault("stack", [])
        stack.append((self, _call_arguments(signature, args, kwargs) or {}))
        try:
            init(self, *args, **kwargs)
        finally:
            stack.pop()

    return __init__


def _chain_signature(cls):
    """``cls.__init__``'s signature extended with the keyword arguments its ``**kwargs`` passes on to the classes above
    it, up to VideoPredictionModule: what ``inspect.signature(cls)``, help() and experiments/config.py see, so a YAML
    ``lr: 1e-3`` is type-checked and the resolved config lists every default."""
    params, seen, var_keyword = [], set(), None
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        own = list(inspect.signature(inspect.unwrap(init)).parameters.values())
        for p in own[1:]:
            if p.kind is p.VAR_KEYWORD:
                var_keyword = var_keyword or p
            elif p.name not in seen and (klass is cls or p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
                seen.add(p.name)
                params.append(p if klass is cls else p.replace(kind=p.KEYWORD_ONLY))
        if klass is VideoPredictionModule or not any(p.kind is p.VAR_KEYWORD for p in own):
            break  # this __init__ passes nothing further up
    first = list(inspect.signature(inspect.unwrap(cls.__dict__["__init__"])).parameters.values())[:1]
    ordered = [p for p in params if p.kind is not p.KEYWORD_ONLY] + [p for p in params if p.kind is p.KEYWORD_ONLY]
    return inspect.Signature(first + ordered + ([var_keyword] if var_keyword else []))


# -- the base class ----------------------------------------------------------------------------------------------------
class VideoPredictionModule(Module):
    """Base of msforge's video-prediction models: subclass it with ``__init__(self, <its args>, **kwargs)`` calling
    ``super().__init__(**kwargs)`` first, and ``construct(self, inputs)``.

    ``lr``, ``weight_decay``: Adam's, constant unless :meth:`lr_scheduler` returns a scheduler.
    ``loss``: the training loss, "mse" (mean squared error over all elements), "l1" (mean absolute error), "l1+l2"
    (their sum) or "bce" (binary cross-entropy of the pixels, for a model whose outputs lie in (0, 1), e.g. after a
    sigmoid) or "ssim" (1 - SSIM: ``msforge.metrics.ssim``'s definition on unclipped predictions, differentiable;
    frames of at least 7x7); "mae" and "mse+mae" are accepted for "l1" and "l1+l2" (and "l2" for "mse"); or a dict of
    weights over "mse", "l1", "bce" and "ssim", e.g. ``{"mse": 1.0, "l1": 0.2}`` (a weighted sum: "l1+l2" is
    ``{"mse": 1, "l1": 1}``).
    Also ``val_loss``.
    ``in_frames``, ``out_frames``, ``frame_shape`` (C, H, W): the clip the model is built for, read by subclasses as
    ``self.in_frames``, ``self.out_frames``, ``self.frame_shape``; validation, test and predict batches are checked
    against them.

    ``training_step`` returns ``{"loss", "mse", "mae", <extra losses>}``: the loss with the extra terms added, MSE and
    MAE as per-frame sums over pixels averaged over frames (``msforge.metrics``' definition, on unclipped
    predictions, so ``train_mse`` compares with ``val_mse``) and each extra term (logged as ``train_<name>``).
    Validation and test metrics are those of published tables (OpenSTL's): MSE, MAE and ``val_loss`` (without extra
    terms) of the raw predictions, SSIM and PSNR of predictions clipped to [0, 1]; ``<stage>_mse_clipped`` and
    ``<stage>_mae_clipped`` give MSE and MAE of the clipped frames too. The test stage also logs
    ``test_mse_frame_<k>``, the MSE of the k-th predicted frame (k = 1 ..
    out_frames, zero-padded to the digits of out_frames: see :func:`per_frame_key`), which experiments/run.py writes to
    ``test_metrics.json`` with the other test metrics.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])
            cls.__init__.__signature__ = _chain_signature(cls)

    def __init__(self, lr=1e-3, weight_decay=0.0, loss: typing.Union[str, dict] = "mse", in_frames=10, out_frames=10,
                 frame_shape=DEFAULT_FRAME_SHAPE, **unknown):
        super().__init__()
        name = type(self).__name__
        if unknown:
            valid = [p for p in inspect.signature(type(self)).parameters.values() if p.kind is not p.VAR_KEYWORD]
            valid = [p.name for p in valid]
            first = sorted(unknown)[0]
            close = difflib.get_close_matches(first, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TypeError(f"{name}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))}"
                            f"{hint}; it takes {', '.join(valid)}")
        self.loss_terms = loss_terms(loss)
        for arg, value in (("in_frames", in_frames), ("out_frames", out_frames)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}({arg}={value!r}): expected a positive int")
        if (not isinstance(frame_shape, (tuple, list)) or len(frame_shape) != 3
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                           for v in frame_shape)):
            raise ValueError(f"{name}(frame_shape={frame_shape!r}): expected (channels, height, width), "
                             "three positive ints")
        if "ssim" in dict(self.loss_terms) and min(frame_shape[1:]) < metrics.SSIM_WIN_SIZE:
            win = metrics.SSIM_WIN_SIZE
            raise ValueError(f"{name}(frame_shape={tuple(frame_shape)!r}): the 'ssim' loss needs frames of at least "
                             f"{win}x{win}")
        for arg, value in (("lr", lr), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}({arg}={value!r}): expected a number >= 0")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.in_frames, self.out_frames = int(in_frames), int(out_frames)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        own = dict(lr=lr, weight_decay=weight_decay, loss=loss, in_frames=in_frames, out_frames=out_frames,
                   frame_shape=frame_shape)
        given = _pending_args(self) or {}  # the arguments the model was built with, if it is a subclass
        self.hparams.update(given)
        self.hparams.update({k: v for k, v in own.items() if k not in given})

    # -- what a model defines ----------------------------------------------------------------------------------------
    def construct(self, inputs):
        """Predictions (N, out_frames, C, H, W) for ``inputs`` (N, in_frames, C, H, W); every model defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define construct(self, inputs) returning the "
                                  "predicted frames (N, out_frames, C, H, W)")

    def training_forward(self, inputs, targets):
        """Hook: the forward pass of a training step, ``-> (predictions, extra_losses)``.

        Runs inside the compiled train step (write it like ``construct``: MindSpore operations, ``self.construct``
        rather than ``self(...)``). ``targets`` (N, out_frames, C, H, W) is the ground truth, for models that feed it
        back while training (scheduled sampling). ``extra_losses`` is a dict ``{name: scalar Tensor}`` of terms
        already weighted: each is added to the loss and logged as ``train_<name>`` (names other than "loss", "mse",
        "mae"). Default: ``self.construct(inputs), {}``.
        """
        return self.construct(inputs), {}

    def lr_scheduler(self, optimizer):
        """Hook: return None (constant ``lr``, the default), a scheduler over ``optimizer`` or a Lightning-style
        ``{"scheduler": ..., "interval": "step", ...}`` dict; it becomes ``configure_optimizers()``'s
        ``"lr_scheduler"``. E.g. ``return msforge.schedulers.CosineAnnealingLR(optimizer, T_max=100)``."""
        return None

    # -- batch and loss ----------------------------------------------------------------------------------------------
    def split_batch(self, batch):
        """``(inputs, targets)`` of a batch: the first two items of a tuple or list, or, for one video Tensor (N, T, C,
        H, W) (alone or in a 1-tuple), its first ``in_frames`` frames and the ``out_frames`` after them."""
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        video = batch[0] if isinstance(batch, (tuple, list)) else batch
        return video[:, :self.in_frames], video[:, self.in_frames:self.in_frames + self.out_frames]

    def compute_loss(self, predictions, targets):
        """The training loss without extra terms, a scalar Tensor (also ``val_loss``)."""
        err = predictions - targets
        loss = None
        for term, weight in self.loss_terms:  # constants: graph mode unrolls the loop
            if term == "mse":
                value = ops.mean(err * err)
            elif term == "l1":
                value = ops.mean(ops.abs(err))
            elif term == "ssim":
                value = 1.0 - ssim_of_frames(predictions, targets)
            else:  # "bce": pixels as probabilities (Shi et al. 2015 trained ConvLSTM so), outputs in (0, 1)
                p = ops.clamp(predictions, BCE_EPS, 1.0 - BCE_EPS)
                value = -ops.mean(targets * ops.log(p) + (1.0 - targets) * ops.log(1.0 - p))
            if weight != 1.0:
                value = value * weight
            loss = value if loss is None else loss + value
        return loss

    # -- steps -------------------------------------------------------------------------------------------------------
    def training_step(self, batch):
        inputs, targets = self.split_batch(batch)
        predictions, extra_losses = self.training_forward(inputs, targets)
        err = predictions - targets
        pixels = targets.shape[2] * targets.shape[3] * targets.shape[4]
        loss = self.compute_loss(predictions, targets)
        # "mse"/"mae": per-frame sums over pixels averaged over frames, as val_mse/val_mae (on unclipped predictions)
        outputs = {"loss": loss, "mse": ops.mean(err * err) * pixels, "mae": ops.mean(ops.abs(err)) * pixels}
        for name, value in extra_losses.items():
            if name in RESERVED_OUTPUTS:
                # quotes written out: graph mode (where this raises, at compile time) ignores !r
                raise ValueError(f"training_forward returned an extra loss named '{name}'; rename it (the names "
                                 f"{', '.join(RESERVED_OUTPUTS)} are training_step's own)")
            loss = loss + value
            outputs[name] = value
        outputs["loss"] = loss
        return outputs

    def predict_frames(self, inputs):
        """Predictions for ``inputs`` (numpy or Tensor, (N, in_frames, C, H, W)) as numpy clipped to [0, 1]."""
        return np.clip(_numpy(self(_tensor(inputs))), 0.0, 1.0)

    def check_batch(self, inputs, targets=None):
        """One-line ValueError when a batch's shapes are not the clip the model was built for."""
        expected = (self.in_frames, *self.frame_shape)
        problems = []
        if tuple(inputs.shape[1:]) != expected:
            problems.append(f"inputs {tuple(inputs.shape)}, expected (N, {', '.join(map(str, expected))})")
        if targets is not None and tuple(targets.shape[1:]) != (self.out_frames, *self.frame_shape):
            problems.append(f"targets {tuple(targets.shape)}, expected "
                            f"(N, {', '.join(map(str, (self.out_frames, *self.frame_shape)))})")
        if problems:
            raise ValueError(f"{type(self).__name__} was built for in_frames={self.in_frames}, out_frames="
                             f"{self.out_frames}, frame_shape={self.frame_shape} but the batch has "
                             f"{' and '.join(problems)}; set the model's in_frames / out_frames / frame_shape to "
                             "match the data")

    def _evaluate(self, batch, prefix):
        inputs, targets = self.split_batch(batch)
        targets = _numpy(targets)
        self.check_batch(inputs, targets)
        raw = _numpy(self(_tensor(inputs)))
        if raw.shape != targets.shape:
            raise ValueError(f"{type(self).__name__}.construct returned predictions of shape {raw.shape} for "
                             f"targets of shape {targets.shape}; it must return (N, out_frames={self.out_frames}, "
                             f"{', '.join(map(str, self.frame_shape))})")
        batch_size = targets.shape[0]
        if prefix == "val":
            loss = float(self.compute_loss(Tensor(raw), Tensor(targets.astype(np.float32))).asnumpy())
            self.log("val_loss", loss, prog_bar=True, batch_size=batch_size)
        # as published tables (OpenSTL's metric()): MSE/MAE of the raw outputs, SSIM/PSNR of outputs clipped to [0, 1]
        values = metrics.video_metrics(raw, targets)
        clipped = np.clip(raw, 0.0, 1.0)  # what the frames show: the other MSE/MAE figure
        values.update(mse_clipped=metrics.mse(clipped, targets), mae_clipped=metrics.mae(clipped, targets))
        for name in ("mse", "mae", "ssim", "psnr", "mse_clipped", "mae_clipped"):
            self.log(f"{prefix}_{name}", values[name], prog_bar=prefix == "test" and name == "mse",
                     batch_size=batch_size)
        if prefix == "test":  # the error curve over the forecast horizon
            for k, value in enumerate(metrics.per_frame("mse", raw, targets), start=1):
                self.log(per_frame_key(k, self.out_frames), float(value), batch_size=batch_size)
        return values

    def validation_step(self, batch, batch_idx):
        return self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Predicted frames ``(N, out_frames, C, H, W)`` as numpy, clipped to [0, 1]; the batch is ``(inputs, ...)``
        or the inputs alone."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.check_batch(inputs)
        return self.predict_frames(inputs)

    def images_for_logging(self, batch):
        """The first sequence of a validation batch: input, target and predicted frames, for TensorBoard."""
        # the whole batch goes through the network (not batch[0:1]): a new batch size would recompile the graph
        inputs, targets = (_numpy(x) for x in self.split_batch(batch))
        predictions = self.predict_frames(inputs)
        return {"input": np.clip(inputs[0], 0, 1), "target": np.clip(targets[0], 0, 1),
                "prediction": predictions[0]}

    def configure_optimizers(self):
        optimizer = nn.Adam(self.trainable_params(), learning_rate=self.lr, weight_decay=self.weight_decay)
        scheduler = self.lr_scheduler(optimizer)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


BASE_ARGUMENTS = tuple(p.name for p in inspect.signature(VideoPredictionModule.__init__).parameters.values()
                       if p.name != "self" and p.kind is not p.VAR_KEYWORD)
