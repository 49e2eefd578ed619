"""One checkpoint = one MindSpore .ckpt file, written atomically, holding the weights under their own names, the
optimizer and loss-scale state, and the trainer state as JSON (no pickle anywhere).

``mindspore.save_checkpoint`` deletes the old file before writing the new one, so it is only ever called on a temporary
name in the same folder; the file is fsynced and moved over the final name with ``os.replace``. A process killed at any
instant leaves either the old or the new checkpoint, never neither. ``crc_check=True`` catches flipped bytes on load.
"""
import errno
import json
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

STATE_KEY = "msforge_state"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupted, or from another model. The message is one line."""


def save(path, named_params, state: dict):
    """Write ``named_params`` ((name, Parameter) pairs) and ``state`` (JSON-able) to ``path`` atomically."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}.ckpt")
    ms_tmp = tmp[: -len(".ckpt")] + ".tmp"  # MindSpore writes there first, then renames it to ``tmp``
    try:
        ms.save_checkpoint([{"name": n, "data": p} for n, p in named_params], tmp,
                           append_dict={STATE_KEY: json.dumps(state, default=_json_default)}, crc_check=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        for leftover in (tmp, ms_tmp):
            if os.path.exists(leftover):
                os.remove(leftover)
        if isinstance(err, OSError):  # disk full, file too large, no permission: MindSpore's error names no file
            reason = err.strerror or str(err) or type(err).__name__
            code = errno.errorcode.get(err.errno)
            raise CheckpointError(f"could not write checkpoint {path!r}: {reason}{f' ({code})' if code else ''}") \
                from None
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def load(path):
    """Read a checkpoint: returns ``(params, state)``, params a dict name -> numpy array, state a dict (``{}`` for a
    plain MindSpore checkpoint without msforge state)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    has_crc = _ends_with_crc(path)  # plain MindSpore files often have none: checked only where present (no warning)
    try:
        raw = ms.load_checkpoint(path, crc_check=has_crc)
    except (ValueError, RuntimeError, OSError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be read ({first})") from None
    state = {}
    if STATE_KEY in raw:
        if not has_crc:  # msforge always writes one: the end of the file is missing
            raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be read (its crc is "
                                  "missing)")
        state = json.loads(str(raw.pop(STATE_KEY)))
    params = {name: value.asnumpy() for name, value in raw.items() if hasattr(value, "asnumpy")}
    return params, state


def _ends_with_crc(path):
    """Whether the file ends with the crc MindSpore appends with ``crc_check=True`` (b"crc_num" + 10 bytes)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 17:
            return False
        f.seek(-17, os.SEEK_END)
        return f.read(7) == b"crc_num"


def check_match(path, params, named_targets, require_all=True):
    """Raise CheckpointError naming the first mismatched parameters between a file and the model's parameters."""
    targets = dict(named_targets)
    problems = []
    missing = [n for n in targets if n not in params]
    if missing and require_all:
        problems.append(f"missing {_names(missing)}")
    for name, target in targets.items():
        if name in params and tuple(params[name].shape) != tuple(target.shape):
            problems.append(f"{name!r} has shape {tuple(params[name].shape)} in the file but {tuple(target.shape)} "
                            "in the model")
            break
    model_weights_found = any(n in params for n in targets)
    if not model_weights_found:
        problems.insert(0, f"none of the model's parameters are in it (it holds {_names(list(params))})")
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not match this model: {'; '.join(problems)}")


def _names(names, shown=3):
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def assign(named_targets, params):
    """Copy values into parameters with ``ops.assign``: unlike ``set_data`` it reaches graphs already compiled."""
    for name, target in named_targets:
        if name in params:
            # Tensor(..., dtype=) casts; mindspore.dtype_to_nptype would print a deprecation warning per parameter
            ops.assign(target, Tensor(params[name], dtype=target.dtype))


def changed_hparams(saved, current):
    """``"lr 0.002 -> 0.001, hidden [32, 32] -> [8, 8]"``: the hyper-parameters of a checkpoint (``state["hparams"]``)
    that differ from the model's now, compared as the checkpoint stores them (JSON); "" when they agree or either side
    has none."""
    if not saved or not current:
        return ""
    now = json.loads(json.dumps(dict(current), default=_json_default))

    def shown(values, key):
        return repr(values[key]) if key in values else "(unset)"

    return ", ".join(f"{k} {shown(saved, k)} -> {shown(now, k)}" for k in sorted(set(saved) | set(now))
                     if k not in saved or k not in now or saved[k] != now[k])


def named_params(cell):
    """``(name, Parameter)`` pairs of a cell, each name once (shared weights appear once)."""
    seen, pairs = set(), []
    for p in cell.get_parameters():
        if p.name not in seen:
            seen.add(p.name)
            pairs.append((p.name, p))
    return pairs


def next_version(root):
    """The N of the next ``version_N`` folder under ``root``."""
    if not os.path.isdir(root):
        return 0
    found = [int(d[8:]) for d in os.listdir(root) if d.startswith("version_") and d[8:].isdigit()]
    return max(found) + 1 if found else 0


def find_last(root, extra_dirs):
    """The newest ``last.ckpt`` in ``extra_dirs`` or in any run folder under ``root``, or None."""
    candidates = [os.path.join(d, "last.ckpt") for d in extra_dirs if d]
    if os.path.isdir(root):
        candidates += [os.path.join(root, d, "checkpoints", "last.ckpt") for d in os.listdir(root)]
    existing = [c for c in candidates if os.path.isfile(c)]
    return max(existing, key=os.path.getmtime) if existing else None
