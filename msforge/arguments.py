"""Checks of the Trainer's arguments, in Lightning's formats; errors are one line saying what to change.

``check_trainer_arguments`` is the one place that decides whether a value can run: the Trainer calls it on every
argument, and ``experiments/run.py`` calls it on a config's ``trainer`` section before anything is built or written.
Its errors start with ``name=value:`` and carry the argument's name in ``err.key``.
"""
import datetime
import math
import os


class MisconfigurationError(ValueError):
    """Bad arguments or a model the Trainer cannot run; the message is one line saying what to change. ``key`` names
    the argument at fault when one is (the CLI prefixes it with its config section)."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed")
DEVICE_TARGETS = ("auto", "CPU", "GPU", "Ascend")
MODES = ("graph", "pynative")
CLIP_ALGORITHMS = ("norm", "value")
STRATEGIES = ("auto", "single", "data_parallel")
MAX_SEED = 2**32 - 1  # numpy's and MindSpore's seeds are 32-bit unsigned


def choice(name, value, allowed):
    if value not in allowed:
        raise MisconfigurationError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}",
                                    key=name)
    return value


def parse_max_time(value):
    """Lightning's formats: "DD:HH:MM:SS", a dict of timedelta arguments, a timedelta, or seconds (> 0)."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, dict):
        try:
            seconds = datetime.timedelta(**value).total_seconds()
        except (TypeError, ValueError, OverflowError) as err:
            raise MisconfigurationError(f"max_time={value!r}: not a timedelta ({err}); use keys such as days, "
                                        "hours, minutes, seconds", key="max_time") from None
    elif _is_number(value):
        seconds = float(value)
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = map(int, parts)
            seconds = datetime.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    if seconds is None:
        raise MisconfigurationError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict like {{'hours': 1}}, or seconds",
                                    key="max_time")
    if math.isnan(seconds) or seconds <= 0:
        raise MisconfigurationError(f"max_time={value!r}: must be a positive duration (None: no time limit)",
                                    key="max_time")
    return seconds


def limit_batches(name, value, total):
    """Lightning's limit_*_batches: None = all, int = that many batches, float = that fraction of the epoch."""
    if value is None:
        return total
    _check_limit(name, value, minimum=0)
    if isinstance(value, float):
        if math.isinf(total):
            raise MisconfigurationError(f"{name}={value!r}: a fraction needs a dataloader with a length", key=name)
        return int(total * value)
    return min(value, total)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_limit(name, value, minimum):
    """An int count >= ``minimum`` or a float fraction in [0, 1] (in (0, 1] when ``minimum`` is 1)."""
    if _is_int(value):
        ok = value >= minimum
    elif isinstance(value, float) and math.isfinite(value):
        ok = (value > 0 if minimum else value >= 0) and value <= 1
    else:
        ok = False
    if not ok:
        low = "(0, 1]" if minimum else "[0, 1]"
        raise MisconfigurationError(f"{name}={value!r}: use an int number of batches >= {minimum} or a float "
                                    f"fraction of the epoch in {low}", key=name)


def _check_int(name, value, minimum, allowed=(), hint=""):
    if not (_is_int(value) and (value >= minimum or value in allowed)):
        extra = "".join(f" or {a}" for a in allowed)
        raise MisconfigurationError(f"{name}={value!r}: must be an int >= {minimum}{extra}{hint}", key=name)


def _check_path_part(name, value):
    """A folder name inside the run root, never a path out of it (``name: ../x``)."""
    text = str(value)
    if os.sep in text or (os.altsep and os.altsep in text) or text in (".", "..") or "\0" in text:
        raise MisconfigurationError(f"{name}={value!r}: must be a plain folder name, not a path (no '/', '.' or "
                                    "'..'); set default_root_dir to choose where runs go", key=name)


def check_trainer_arguments(args):
    """Check the Trainer arguments in ``args`` (a dict of those given; the rest take the Trainer's defaults).

    Raises MisconfigurationError (``err.key`` = the argument) at the first value that cannot run."""
    get = args.get
    if "precision" in args:
        choice("precision", str(get("precision")), PRECISIONS)
    for name, allowed in (("device_target", DEVICE_TARGETS), ("mode", MODES),
                          ("gradient_clip_algorithm", CLIP_ALGORITHMS), ("strategy", STRATEGIES)):
        if name in args:
            choice(name, get(name), allowed)

    max_epochs, max_steps = get("max_epochs"), get("max_steps", -1)
    if max_epochs is not None:
        _check_int("max_epochs", max_epochs, 1, allowed=(-1,),
                   hint=f"{' (0 trains nothing)' if max_epochs == 0 else ''}; -1 or None with max_steps or max_time "
                        "for a run they end")
    _check_int("max_steps", max_steps, 1, allowed=(-1,), hint=" (-1: no step limit)")
    parse_max_time(get("max_time"))

    if get("limit_train_batches") is not None:
        _check_limit("limit_train_batches", get("limit_train_batches"), minimum=1)
    for kind in ("val", "test", "predict"):
        if get(f"limit_{kind}_batches") is not None:
            _check_limit(f"limit_{kind}_batches", get(f"limit_{kind}_batches"), minimum=0)
    fast_dev_run = get("fast_dev_run", False)
    if not isinstance(fast_dev_run, bool):
        _check_int("fast_dev_run", fast_dev_run, 0, hint=" or a bool")
    _check_limit("overfit_batches", get("overfit_batches", 0), minimum=0)
    _check_int("num_sanity_val_steps", get("num_sanity_val_steps", 2), 0, allowed=(-1,), hint=" (-1: all batches)")

    interval = get("val_check_interval")
    if interval is not None:
        if _is_int(interval):
            _check_int("val_check_interval", interval, 1, hint=" (batches) or a float fraction of the epoch")
        elif not (isinstance(interval, float) and 0 < interval <= 1):
            raise MisconfigurationError(f"val_check_interval={interval!r}: use an int number of batches >= 1, a "
                                        "float fraction of the epoch in (0, 1], or None (at the epoch end only)",
                                        key="val_check_interval")
    if get("check_val_every_n_epoch", 1) is not None:
        _check_int("check_val_every_n_epoch", get("check_val_every_n_epoch", 1), 1, hint=" or None")
    elif not _is_int(interval):  # Lightning's rule: None counts val_check_interval in batches across epochs
        raise MisconfigurationError(f"check_val_every_n_epoch=None with val_check_interval={interval!r}: None "
                                    "validates every val_check_interval training batches counted across epochs, so "
                                    "val_check_interval must be an int", key="check_val_every_n_epoch")
    for name in ("logger", "enable_progress_bar", "enable_checkpointing", "enable_model_summary", "deterministic"):
        if name in args and not isinstance(get(name), bool):
            raise MisconfigurationError(f"{name}={get(name)!r}: must be true or false", key=name)
    _check_int("log_every_n_steps", get("log_every_n_steps", 50), 1)
    clip = get("gradient_clip_val")
    if clip is not None and not (_is_number(clip) and math.isfinite(clip) and clip > 0):
        raise MisconfigurationError(f"gradient_clip_val={clip!r}: must be a positive finite number or None",
                                    key="gradient_clip_val")
    _check_int("accumulate_grad_batches", get("accumulate_grad_batches", 1), 1)
    _check_int("steps_per_execution", get("steps_per_execution", 1), 1)
    scale = get("loss_scale")
    numbers = scale.values() if isinstance(scale, dict) else [scale]
    if any(_is_number(v) and not math.isfinite(v) for v in numbers):
        raise MisconfigurationError(f"loss_scale={scale!r}: numbers must be finite", key="loss_scale")
    seed = get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise MisconfigurationError(f"seed={seed!r}: must be an int in [0, 2**32 - 1] or None", key="seed")
    if get("name") is not None:
        _check_path_part("name", get("name"))
    version = get("version")
    if version is not None:
        if _is_int(version):
            _check_int("version", version, 0)
        else:
            _check_path_part("version", version)
    _check_int("devices", get("devices", 1), 1)
