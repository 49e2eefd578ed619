"""What MindSpore's compile cache cannot store of a train step: the names of its dict output.

MindSpore keeps compiled graphs between runs when ``MS_COMPILER_CACHE_ENABLE=1`` (or
``set_context(enable_compile_cache=True)``), under ``MS_COMPILER_CACHE_PATH`` (``compile_cache_path``). A train step
returns a dict output as the tuple of its values (a dict cannot be stored) and records the keys while it compiles;
a run that loads the step from the cache compiles nothing, so the keys are kept here, in a JSON file beside the cache,
written by the run that compiled it.
"""
import json
import os

import mindspore as ms

NAMES_FILE = "msforge_output_names.json"


def cache_dir():
    """The compile cache's folder, or None when the cache is off."""
    enabled = os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1" or bool(ms.get_context("enable_compile_cache"))
    if not enabled:
        return None
    return ms.get_context("compile_cache_path") or os.environ.get("MS_COMPILER_CACHE_PATH") or os.curdir


def _names_path(folder):
    return os.path.join(folder, NAMES_FILE)


def save_output_names(step_name, names):
    """Record ``names`` (the output keys of the step called ``step_name``) beside the cache; a no-op when it is off."""
    folder = cache_dir()
    if folder is None:
        return
    path = _names_path(folder)
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    if table.get(step_name) == list(names):
        return
    table[step_name] = list(names)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # one writer per process; the rename is atomic
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_output_names(step_name, count):
    """The output keys recorded for ``step_name`` when its graph was compiled into the cache; ``count`` is how many
    values the loaded graph returned. One-line ValueError when they are missing or do not fit."""
    folder = cache_dir()
    path = _names_path(folder if folder is not None else os.curdir)
    try:
        with open(path) as f:
            names = json.load(f).get(step_name)
    except FileNotFoundError:
        names = None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} (the output names of MindSpore's compile cache) cannot be read: {err}; delete "
                         f"the cache folder {folder} and run again") from None
    if names is None:
        raise ValueError(f"MindSpore loaded {step_name} from its compile cache in {folder}, but {path} has no "
                         f"output names for it; delete the cache folder and run again")
    if len(names) != count:
        raise ValueError(f"{path} names {len(names)} outputs of {step_name} ({', '.join(names)}) but the cached "
                         f"graph returns {count}; delete the cache folder {folder} and run again")
    return tuple(names)
