"""Experiment configs for ``experiments/run.py``: YAML files of ``class_path`` + ``init_args``, dotted ``key=value``
overrides, and validation of every key and type before anything is built or written.

A config file is code: each ``class_path`` in it is imported and its constructor runs with the ``init_args``. Only run
config files you trust, as you would only run scripts you trust. Nothing else executes: YAML is read with
``yaml.safe_load`` (plain mappings, lists and scalars; no Python objects), and only the config files the user names
(and the overrides they type) are ever read.

This module does not import MindSpore or msforge (a bad config is reported in a fraction of a second, and the module
is tested without them); what is specific to the framework (the Trainer's class, the base classes of model, data and
callbacks) is passed in by the caller. Every error is a ``ConfigError`` with a one-line message.

Types: a value is checked against the parameter's annotation when it has one, else against the type of its default
(an ``int`` default takes ints, a ``float`` default ints and floats, a ``bool`` default only true/false, a tuple or
list default a list), else against ``hints`` given by the caller; a parameter without any of these takes anything and
its constructor judges. ``1e-3`` is a float here (YAML 1.2), not the string PyYAML's YAML 1.1 rules make of it,
wherever a float is accepted.

Values: no NaN anywhere; the arguments every component shares by name take only sensible values (``VALUE_RULES``:
learning rates finite and positive, batch sizes >= 1, scheduler periods >= 1, ...); folders a run writes into must
be creatable and writable; ``name`` is a folder name, not a path. The Trainer's own ranges are checked by the
``trainer_check`` the caller passes (msforge's ``check_trainer_arguments``). A constructor that still fails is
reported with the ``init_args`` key it failed on, found in its message or by building it again without each key.

Size: a config file is at most ``MAX_CONFIG_BYTES``, and a config (or an override) at most ``MAX_NODES`` values
counted with YAML aliases expanded, nested at most ``MAX_DEPTH`` deep, so an alias bomb or a recursive alias is
refused at once; a key given twice in one mapping is an error naming the key and its lines.
"""
import collections.abc
import copy
import difflib
import importlib
import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field

import yaml

__all__ = ["ConfigError", "Experiment", "find_config", "load_yaml", "parse_override", "apply_overrides",
           "check_structure", "check_early", "check_size", "check_values", "writable_dir_problem", "import_class",
           "check_kwargs", "check_experiment", "instantiate", "culprit", "with_defaults", "describe_arguments",
           "type_name", "flow", "dump_yaml", "dumps", "one_line", "TOP_LEVEL", "COMPONENT_KEYS", "VALUE_RULES"]

TOP_LEVEL = ("trainer", "model", "data", "callbacks", "lr_scheduler", "seed", "name")
COMPONENT_KEYS = ("class_path", "init_args")
# lr_scheduler: a scheduler class built on the model's optimizer, plus the Trainer's scheduler options
SCHEDULER_OPTIONS = {"interval": typing.Literal["epoch", "step"], "frequency": int, "monitor": str, "name": str,
                     "strict": bool}
# YAML 1.2 floats without a dot ("1e-3", "5E4"), which PyYAML (YAML 1.1) leaves as strings
_EXP_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_EMPTY = inspect.Parameter.empty
MAX_CONFIG_BYTES = 1 << 20
MAX_NODES = 100_000  # values in a config with aliases expanded (the shipped configs have ~60)
MAX_DEPTH = 32
MAX_BLAME_RETRIES = 12  # constructions tried to find the init_args key a failing constructor rejects


class ConfigError(ValueError):
    """A config that cannot run; ``str(err)`` is one line saying what to change."""

    def __init__(self, message):
        super().__init__(one_line(message))


def one_line(text):
    return " ".join(str(text).split())


# == files ============================================================================================================
def find_config(name, search_dirs=()):
    """``name`` as given, else in each of ``search_dirs`` (also with ``.yaml`` appended); returns the path."""
    candidates = [name, name + ".yaml"]
    if not os.path.isabs(name):
        for folder in search_dirs:
            candidates += [os.path.join(folder, name), os.path.join(folder, name + ".yaml")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = ", ".join(dict.fromkeys([os.getcwd()] + [os.path.abspath(d) for d in search_dirs]))
    raise ConfigError(f"config file {name!r} not found (looked in {where})")


def load_yaml(path):
    """The config in ``path`` as a dict, read with ``yaml.safe_load``'s rules; a syntax error or a key given twice
    names file, line and column; a file over ``MAX_CONFIG_BYTES`` or a config over ``MAX_NODES`` values is refused."""
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {os.path.getsize(path):,} bytes; a config is at most "
                              f"{MAX_CONFIG_BYTES:,}")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    config = _parse_yaml(text, path)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the config must be a mapping with sections {', '.join(TOP_LEVEL)}; got a "
                          f"{_kind(config)}")
    check_size(config, where=path)
    return config


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (plain mappings, lists and scalars; no Python objects)."""


def _parse_yaml(text, where):
    """YAML text -> Python values, as ``yaml.safe_load`` but refusing a key given twice in one mapping (PyYAML keeps
    the last silently); every error is a one-line ConfigError starting with ``where`` (and the line)."""
    loader = _Loader(text)
    try:
        _check_nesting(text, where)  # PyYAML composes recursively: 5,000 brackets would exhaust Python's stack
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        problem = getattr(err, "problem", None) or str(err)
        if isinstance(err, yaml.constructor.ConstructorError):  # e.g. !!python/object: safe_load builds no objects
            raise ConfigError(f"{at}: unsupported YAML tag ({problem}); configs are plain YAML, read with "
                              "yaml.safe_load") from None
        context = getattr(err, "context", None)
        raise ConfigError(f"{at}: YAML syntax error: {problem}" + (f" ({context})" if context else "")) from None
    finally:
        loader.dispose()


def _check_nesting(text, where):
    """Refuse YAML nested deeper than ``MAX_DEPTH`` from its events (PyYAML's parser is iterative, unlike its
    composer)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ConfigError(f"{where}:{mark.line + 1}:{mark.column + 1}: nested more than {MAX_DEPTH} levels "
                                  "deep; a config holds settings, not data")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _check_duplicate_keys(root, where):
    """Walk the composed YAML nodes (each once: aliases share nodes) for a mapping that repeats a key."""
    stack, seen = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": its keys may be overridden
                    stack.append((value_node, path))
                    continue
                key = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
                dotted = f"{path}.{key_node.value}" if path and key else (key_node.value if key else path)
                if key is not None and key in first:
                    mark = key_node.start_mark
                    raise ConfigError(f"{where}:{mark.line + 1}:{mark.column + 1}: duplicate key {dotted} (first given "
                                      f"at line {first[key] + 1}); YAML would silently keep only the last one: remove "
                                      "one")
                if key is not None:
                    first[key] = key_node.start_mark.line
                stack.append((value_node, dotted))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(node.value))


def check_size(value, where=""):
    """Refuse a config (or override value) of more than ``MAX_NODES`` values, counted with YAML aliases expanded (as
    everything after loading sees them), or nested more than ``MAX_DEPTH`` deep (a recursive alias). Fast: stops at
    the limit, so an alias bomb of 10**9 values costs ``MAX_NODES`` steps."""
    count, stack = 0, [(value, "", 0, True)]
    while stack:
        item, key, depth, in_mappings = stack.pop()
        count += 1
        what = f"{where}: {key}" if where and key else (where or key or "the config")
        if count > MAX_NODES:
            raise ConfigError(f"{what}: more than {MAX_NODES:,} values with YAML aliases expanded (an alias bomb?); "
                              "a config holds settings, not data")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what}: nested more than {MAX_DEPTH} levels deep (a recursive YAML alias?)")
        if isinstance(item, dict):
            for k, v in item.items():
                # name the key down to the first list: inside a bomb the full path is noise
                sub = (f"{key}.{k}" if key else str(k)) if in_mappings else key
                stack.append((v, sub, depth + 1, in_mappings))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, key, depth + 1, False) for v in item)


def dump_yaml(config, path, header=""):
    """Write ``config`` (plain YAML types only) to ``path``, preceded by ``header`` as comment lines."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    text = dumps(config)
    with open(path, "w", encoding="utf-8") as f:
        f.write(comments + text)
    return path


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars, which stay on one line (``hidden: [64, 64]``)."""


def _represent_list(dumper, data):
    flow = all(v is None or isinstance(v, (bool, int, float, str)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dumps(config):
    """``config`` as YAML text, in the style of :func:`dump_yaml`."""
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=120)


# == overrides ========================================================================================================
def parse_override(text):
    """``"a.b.c=value"`` -> ``(["a", "b", "c"], value)`` with the value parsed by ``yaml.safe_load``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. trainer.max_epochs=3")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key like trainer.max_epochs")
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"override {key}: the value is {len(raw):,} characters; at most {MAX_CONFIG_BYTES:,}")
    try:
        value = _parse_yaml(raw, f"override {key}")
    except ConfigError as err:
        if "YAML syntax error" not in str(err):
            raise
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({str(err).split('YAML syntax error: ')[1]})"
                          ) from None
    check_size(value, where=f"override {key}")
    return parts, value


def apply_overrides(config, overrides):
    """A copy of ``config`` with each ``key=value`` string applied in order.

    Keys are dotted paths; missing mappings on the way are created (``model.init_args.lr=0.01`` works when the file has
    no ``init_args``). In a list (``callbacks``) a part is an index (``callbacks.0.init_args.patience=5``) or the
    class name of one entry (``callbacks.EarlyStopping.init_args.patience=5``). Whether the keys are valid is checked
    afterwards, on the merged config.
    """
    config = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node, path = config, []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, ".".join(path), text)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"override {text!r}: {'.'.join(path)} is a {_kind(node)}, not a mapping, so it has "
                                  f"no key {part!r}")
            path.append(part)
    return config


def _list_index(items, part, where, text):
    if re.fullmatch(r"-?\d+", part):
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"override {text!r}: {where} has {len(items)} entries, no index {index}")
        return index
    names = [_short_name(item) for item in items]
    found = [i for i, n in enumerate(names) if n == part]
    if len(found) != 1:
        why = "no entry" if not found else f"{len(found)} entries"
        raise ConfigError(f"override {text!r}: {why} of {where} is a {part}; use an index 0..{len(items) - 1} or one "
                          f"of the class names {', '.join(n for n in names if n) or '(none)'}")
    return found[0]


def _short_name(item):
    path = item.get("class_path") if isinstance(item, dict) else None
    return path.rsplit(".", 1)[-1] if isinstance(path, str) else None


# == structure ========================================================================================================
def check_structure(config, required=("model",)):
    """Top-level keys and the shape of each section (cheap: imports nothing). Returns the config with empty sections
    normalised (``trainer: {}``, ``callbacks: []``)."""
    config = dict(config)
    _check_keys(config, TOP_LEVEL, "")
    for name in required:
        if config.get(name) is None:
            raise ConfigError(f"the config has no {name!r} section (class_path + init_args)")
    trainer = config.get("trainer")
    if trainer is None:
        config["trainer"] = {}
    elif not isinstance(trainer, dict):
        raise ConfigError(f"trainer must be a mapping of Trainer arguments, got a {_kind(trainer)}")
    for name in ("model", "data"):
        if config.get(name) is not None:
            config[name] = _check_component_shape(config[name], name)
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = []
    elif not isinstance(callbacks, list):
        raise ConfigError(f"callbacks must be a list of class_path + init_args entries, got a {_kind(callbacks)}")
    else:
        config["callbacks"] = [_check_component_shape(c, f"callbacks.{i}") for i, c in enumerate(callbacks)]
    if config.get("lr_scheduler") is not None:
        config["lr_scheduler"] = _check_component_shape(config["lr_scheduler"], "lr_scheduler",
                                                        tuple(SCHEDULER_OPTIONS))
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed!r}: expected an int, got {_kind(seed)}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed!r}: must be in [0, 2**32 - 1] (NumPy's and MindSpore's seed range)")
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name={name!r}: expected a str, got {_kind(name)}")
    if name is not None:
        _check_folder_name("name", name)
    for key, value in _leaves(config):
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{key}={value!r}: not a number; give a number (or null where the argument allows it)")
    return config


MAX_SEED = 2**32 - 1


def _check_folder_name(key, name):
    """``name`` becomes one folder under the root: a path (``../x``, ``a/b``) would put the run elsewhere."""
    if not name.strip() or os.sep in name or (os.altsep and os.altsep in name) or name in (".", "..") \
            or "\0" in name:
        raise ConfigError(f"{key}={name!r}: must be a plain folder name (no '/', not '.' or '..'); the run folder is "
                          "<trainer.default_root_dir>/<name>/version_<N>, so set default_root_dir to put runs "
                          "elsewhere")


def _leaves(value, key=""):
    """(dotted key, value) of every scalar in a (size-checked) config."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}.{i}" if key else str(i))
    else:
        yield key, value


def _check_component_shape(spec, where, options=()):
    if isinstance(spec, str):  # shorthand: just the class path
        spec = {"class_path": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with class_path and init_args, got a {_kind(spec)}")
    _check_keys(spec, COMPONENT_KEYS + tuple(options), where)
    if not isinstance(spec.get("class_path"), str) or not spec["class_path"].strip():
        raise ConfigError(f"{where}.class_path is missing: give the class to build, e.g. package.module.ClassName")
    init_args = spec.get("init_args")
    if init_args is None:
        init_args = {}
    elif not isinstance(init_args, dict):
        raise ConfigError(f"{where}.init_args must be a mapping of constructor arguments, got a {_kind(init_args)}")
    out = {"class_path": spec["class_path"].strip(), "init_args": dict(init_args)}
    for key in options:
        if spec.get(key) is not None:
            ok, out[key] = _matches(spec[key], SCHEDULER_OPTIONS[key])
            if not ok:
                raise ConfigError(f"{where}.{key}={spec[key]!r}: expected {_describe(SCHEDULER_OPTIONS[key])}, got "
                                  f"{_kind(spec[key])}")
            if key == "frequency" and out[key] < 1:  # the Trainer steps the scheduler when count % frequency == 0
                raise ConfigError(f"{where}.frequency={out[key]!r}: must be an int >= 1")
    return out


def _check_keys(mapping, valid, where):
    for key in mapping:
        if key not in valid:
            raise ConfigError(_unknown_key(key, valid, where))


def _unknown_key(key, valid, where):
    full = f"{where}.{key}" if where else str(key)
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f" (did you mean {(where + '.') if where else ''}{close[0]}?)" if close else ""
    listed = ", ".join(sorted(map(str, valid))) or "(none)"
    return f"unknown key {full}{hint}; valid keys{' of ' + where if where else ''}: {listed}"


# == values ===========================================================================================================
def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


_POSITIVE = (lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0")
_AT_LEAST_1 = (lambda v: _int(v) and v >= 1, "an int >= 1")
_AT_LEAST_0 = (lambda v: _int(v) and v >= 0, "an int >= 0")

# Arguments that mean the same in every component that takes them (models, data modules, callbacks, schedulers), with
# the values that can run. A learning rate of 0 trains nothing and inf/NaN fail inside MindSpore once the run folder
# exists; a batch size or scheduler period of 0 divides by zero. None passes: the type check decides where it may.
VALUE_RULES = {
    "lr": _POSITIVE, "learning_rate": _POSITIVE, "max_lr": _POSITIVE, "base_lr": _POSITIVE,
    "weight_decay": _NON_NEGATIVE, "eta_min": _NON_NEGATIVE, "min_lr": _NON_NEGATIVE, "gamma": _POSITIVE,
    "batch_size": _AT_LEAST_1, "eval_batch_size": _AT_LEAST_1, "num_workers": _AT_LEAST_0,
    "step_size": _AT_LEAST_1, "T_max": _AT_LEAST_1, "patience": _AT_LEAST_0,
    "total_steps": (lambda v: v == "max_time" or (_int(v) and v >= 1), "an int >= 1 or 'max_time'"),
}
# init_args naming folders a component writes into (ModelCheckpoint's dirpath, the loggers' log_dir)
OUTPUT_DIR_ARGS = ("dirpath", "log_dir", "save_dir")


def check_values(init_args, where, numbers_only=False):
    """Apply ``VALUE_RULES`` and the output-folder check to one component's (type-checked) ``init_args``;
    ``numbers_only``: before the type check, judge only numbers (a wrong type gets the type check's message)."""
    for key, value in init_args.items():
        rule = VALUE_RULES.get(key)
        if numbers_only and not _number(value):
            rule = None
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(f"{where}.{key}={value!r}: must be {rule[1]}")
        if key in OUTPUT_DIR_ARGS and isinstance(value, str):
            problem = writable_dir_problem(value)
            if problem:
                raise ConfigError(f"{where}.{key}={value!r}: {problem}")


def writable_dir_problem(path):
    """Why the folder ``path`` could not be created (or written into), or None. Creates nothing: the nearest existing
    ancestor must be a folder this process may write into, on a file system mounted read-write."""
    path = os.path.abspath(path)
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder, so no folder can be made there"
    writable = os.access(existing, os.W_OK | os.X_OK)
    try:  # root may write anywhere except on a read-only mount
        writable = writable and not os.statvfs(existing).f_flag & os.ST_RDONLY
    except (OSError, AttributeError):
        pass
    if not writable:
        return f"{existing} is not writable, so the run folder cannot be made there"
    return None


# == classes and arguments ============================================================================================
def import_class(class_path, where, default_package=None):
    """Import ``package.module.ClassName``; a bare ``ClassName`` is looked up in ``default_package``."""
    if "." in class_path:
        module_name, attr = class_path.rsplit(".", 1)
    elif default_package:
        module_name, attr = default_package, class_path
    else:
        raise ConfigError(f"{where}.class_path={class_path!r}: give the full path, e.g. package.module.ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError(f"{where}.class_path={class_path!r}: no module named {err.name!r} (is it installed or "
                              "on PYTHONPATH?)") from None
        raise ConfigError(f"{where}.class_path={class_path!r}: importing {module_name} failed: {err}") from None
    except Exception as err:  # the module itself is broken: say where
        raise ConfigError(f"{where}.class_path={class_path!r}: importing {module_name} failed: "
                          f"{type(err).__name__}: {err}") from None
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n))]
        close = difflib.get_close_matches(attr, public, n=1)
        hint = f" (did you mean {module_name}.{close[0]}?)" if close else ""
        raise ConfigError(f"{where}.class_path={class_path!r}: module {module_name} has no {attr!r}{hint}")
    cls = getattr(module, attr)
    if not inspect.isclass(cls):
        raise ConfigError(f"{where}.class_path={class_path!r} is a {type(cls).__name__}, not a class")
    return cls


def _parameters(target):
    """Keyword parameters of a class's constructor (or a function) and whether it takes ``**kwargs``."""
    func = target.__init__ if inspect.isclass(target) else target
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}, True
    params = list(sig.parameters.values())
    if inspect.isclass(target) and params and params[0].kind in (params[0].POSITIONAL_ONLY,
                                                                 params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]  # self
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return named, var_kw


def _annotations(target):
    func = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable string annotations: fall back to defaults
        return {}


def check_kwargs(target, kwargs, where, hints=None, exclude=()):
    """Check ``kwargs`` against ``target``'s constructor: unknown keys (with the nearest valid one), missing required
    arguments and types. Returns the kwargs with YAML quirks fixed (``"1e-3"`` -> ``0.001`` where a float fits)."""
    named, var_kw = _parameters(target)
    for name in exclude:
        named.pop(name, None)
    annotations = _annotations(target)
    hints = hints or {}
    out = {}
    for key, value in kwargs.items():
        if key not in named:
            if key in exclude:
                raise ConfigError(f"{where}.{key} cannot be set here")
            if not var_kw:
                raise ConfigError(_unknown_key(key, named, where))
            out[key] = _untyped(value)  # **kwargs: the constructor judges
            continue
        expected = _expected_type(named[key], annotations, hints)
        ok, fixed = _matches(value, expected)
        if not ok:
            raise ConfigError(f"{where}.{key}={value!r}: expected {_describe(expected)}, got {_kind(value)}")
        out[key] = fixed
    missing = [n for n, p in named.items() if p.default is _EMPTY and n not in out]
    if missing:
        raise ConfigError(f"{where}: missing required argument{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} (set {where}.{missing[0]})")
    return out


def _expected_type(param, annotations, hints):
    if param.name in annotations:
        return annotations[param.name]
    if param.name in hints:
        return hints[param.name]
    if param.annotation is not _EMPTY and not isinstance(param.annotation, str):  # e.g. from a chained signature
        return param.annotation
    default = param.default
    if default is _EMPTY or default is None:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        return list
    if isinstance(default, dict):
        return dict
    return None  # some other object: the constructor judges


def _untyped(value):
    if isinstance(value, str) and _EXP_FLOAT.match(value):
        return float(value)
    if isinstance(value, list):
        return [_untyped(v) for v in value]
    if isinstance(value, dict):
        return {k: _untyped(v) for k, v in value.items()}
    return value


def _matches(value, tp):
    """``(ok, value)``: whether ``value`` (from YAML) fits type ``tp``, and the value to pass on."""
    if tp is None or tp is typing.Any or tp is _EMPTY:
        return True, _untyped(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        for arg in args:  # in order: Union[int, float] keeps 2 an int and 0.5 a float
            ok, fixed = _matches(value, arg)
            if ok:
                return True, fixed
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in args, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str) and _EXP_FLOAT.match(value):
            return True, float(value)
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed-length tuple
            if len(args) != len(value):
                return False, value
            pairs = list(zip(value, args))
        else:
            item = args[0] if args else None
            pairs = [(v, item) for v in value]
        fixed = []
        for v, t in pairs:
            ok, f = _matches(v, t)
            if not ok:
                return False, value
            fixed.append(f)
        return True, fixed
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict), value
    if inspect.isclass(tp) and isinstance(value, tp):
        return True, value
    return True, _untyped(value)  # a type YAML cannot express (a path, an array, ...): the constructor judges


def _describe(tp):
    if tp is None:
        return "anything"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp in (list, tuple):
        return "a list"
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _kind(value):
    if value is None:
        return "None"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


# == the whole experiment =============================================================================================
@dataclass
class Component:
    """One ``class_path`` + ``init_args`` entry, checked: the class and the (fixed-up) arguments."""

    where: str
    class_path: str
    cls: type
    init_args: dict


@dataclass
class Experiment:
    """A checked config: what ``experiments/run.py`` builds and runs."""

    config: dict  # the merged config, normalised (every component a mapping with class_path and init_args)
    trainer_kwargs: dict
    model: Component
    data: typing.Optional[Component]
    callbacks: list = field(default_factory=list)
    seed: typing.Optional[int] = None
    name: typing.Optional[str] = None
    lr_scheduler: typing.Optional[Component] = None  # its class takes the optimizer first, then init_args
    lr_scheduler_options: dict = field(default_factory=dict)  # interval, frequency, monitor, ... for the Trainer


def _component(spec, where, base, default_package, exclude=()):
    cls = import_class(spec["class_path"], where, default_package)
    if base is not None and not issubclass(cls, base):
        raise ConfigError(f"{where}.class_path={spec['class_path']!r} is not a {base.__module__}.{base.__name__} "
                          "subclass")
    init_args = check_kwargs(cls, spec["init_args"], f"{where}.init_args", exclude=exclude)
    check_values(init_args, f"{where}.init_args")
    return Component(where, spec["class_path"], cls, init_args)


def check_experiment(config, trainer_cls, trainer_hints=None, bases=None, default_packages=None, required=("model",),
                     trainer_check=None, default_name=None):
    """Check a whole (merged) config: structure, Trainer arguments, and every class_path with its init_args.

    ``bases``: {"model": cls, "data": cls, "callbacks": cls} the classes they must subclass (optional).
    ``default_packages``: {"model": "models", ...} where a bare class name is looked up.
    ``lr_scheduler`` (optional): a scheduler class whose first argument is the optimizer, its ``init_args`` and the
    Trainer's scheduler options (``interval``, ``frequency``, ``monitor``, ``name``, ``strict``).
    ``trainer_check(kwargs)``: the Trainer's value checks; it raises a ValueError whose ``key`` names the argument.
    ``default_name``: the run's name when neither ``name`` nor ``trainer.name`` is set; the run folder
    ``<trainer.default_root_dir>/<name>`` must be creatable and writable.
    Imports the classes (a config file is code) but builds nothing and writes nothing.
    """
    bases, packages = bases or {}, default_packages or {}
    config = check_structure(config, required)
    trainer_kwargs = check_kwargs(trainer_cls, config["trainer"], "trainer", hints=trainer_hints,
                                  exclude=("callbacks",))
    _check_trainer_values(trainer_kwargs, trainer_check)
    _check_run_folder(trainer_kwargs, config.get("name") or default_name)
    model = _component(config["model"], "model", bases.get("model"), packages.get("model"))
    data = None
    if config.get("data") is not None:
        data = _component(config["data"], "data", bases.get("data"), packages.get("data"))
    callbacks = [_component(spec, f"callbacks.{i}", bases.get("callbacks"), packages.get("callbacks"))
                 for i, spec in enumerate(config["callbacks"])]
    scheduler, options = None, {}
    if config.get("lr_scheduler") is not None:
        spec = config["lr_scheduler"]
        scheduler = _component(spec, "lr_scheduler", bases.get("lr_scheduler"), packages.get("lr_scheduler"),
                               exclude=("optimizer",))
        options = {k: spec[k] for k in SCHEDULER_OPTIONS if k in spec}
        if scheduler.init_args.get("total_steps") == "max_time" and trainer_kwargs.get("max_time") is None:
            raise ConfigError("lr_scheduler.init_args.total_steps='max_time': the schedule lasts trainer.max_time, "
                              "which is not set; set it, e.g. trainer.max_time='00:01:59:00'")
    return Experiment(config, trainer_kwargs, model, data, callbacks, config.get("seed"), config.get("name"),
                      scheduler, options)


def check_early(config, required=("model",), trainer_check=None, default_name=None):
    """The checks that need no class imported (so no MindSpore: a fraction of a second): the structure, NaN, names and
    seed (:func:`check_structure`), the Trainer's values (``trainer_check``), the run folder, and ``VALUE_RULES`` on
    every ``init_args`` given. :func:`check_experiment` repeats them on the type-checked values. Returns the config
    normalised as :func:`check_structure` does."""
    config = check_structure(config, required)
    trainer = {k: _untyped(v) for k, v in config["trainer"].items()}
    _check_trainer_values(trainer, trainer_check)
    _check_run_folder(trainer, config.get("name") or default_name)
    for where in ("model", "data", "lr_scheduler"):
        if config.get(where) is not None:
            check_values(_untyped(config[where]["init_args"]), f"{where}.init_args", numbers_only=True)
    for i, spec in enumerate(config["callbacks"]):
        check_values(_untyped(spec["init_args"]), f"callbacks.{i}.init_args", numbers_only=True)
    return config


def _check_trainer_values(trainer_kwargs, trainer_check):
    if trainer_check is None:
        return
    try:
        trainer_check(trainer_kwargs)
    except ValueError as err:
        key = getattr(err, "key", None)
        raise ConfigError(f"trainer.{err}" if key and str(err).startswith(key) else f"trainer: {err}") from None


def _check_run_folder(trainer_kwargs, config_name):
    """``<default_root_dir>/<name>`` (the run folders' parent) can be created and written, or already is a folder."""
    root = trainer_kwargs.get("default_root_dir") or os.getcwd()
    run_name = trainer_kwargs.get("name") or config_name
    if not isinstance(root, (str, os.PathLike)):
        return  # the type check names it
    problem = writable_dir_problem(os.path.join(root, run_name) if isinstance(run_name, str) else root)
    if problem:
        given = trainer_kwargs.get("default_root_dir")
        raise ConfigError(f"trainer.default_root_dir={given!r}" + ("" if given else " (the current folder)") +
                          f": {problem}")


def instantiate(component, **extra):
    """Build ``component.cls(**component.init_args)``; a failing constructor becomes a one-line ConfigError that names
    the ``init_args`` key it failed on when that can be found (see :func:`culprit`)."""
    try:
        return component.cls(**component.init_args, **extra)
    except Exception as err:
        if os.environ.get("MSFORGE_TRACEBACK"):
            raise
        key = culprit(component, err, extra)
        where = f"{component.where}.init_args.{key}={component.init_args[key]!r}" if key else component.where
        raise ConfigError(f"{where}: {component.cls.__name__}(...) failed: {type(err).__name__}: {err} "
                          "(MSFORGE_TRACEBACK=1 shows the traceback)") from None


def culprit(component, err, extra=None):
    """The ``init_args`` key a constructor failed on, or None: the first given key without which the constructor
    succeeds (each tried once, at most ``MAX_BLAME_RETRIES``), else the first given key the message names."""
    given, extra = component.init_args, extra or {}
    named, _ = _parameters(component.cls)
    optional = [k for k in given if k not in named or named[k].default is not _EMPTY]
    for key in optional[:MAX_BLAME_RETRIES]:
        try:
            component.cls(**{k: v for k, v in given.items() if k != key}, **extra)
        except Exception:
            continue
        return key
    text = str(err)
    return next((k for k in given if re.search(rf"(?<![\w]){re.escape(str(k))}(?![\w])", text)), None)


def with_defaults(target, kwargs, exclude=()):
    """``kwargs`` completed with the defaults of ``target``'s constructor that YAML can hold, in signature order;
    tuples become lists. What a resolved config records."""
    named, _ = _parameters(target)
    out = {}
    for name, param in named.items():
        if name in exclude:
            continue
        if name in kwargs:
            out[name] = _plain(kwargs[name])
        elif param.default is not _EMPTY and _yamlable(param.default):
            out[name] = _plain(param.default)
    out.update({k: _plain(v) for k, v in kwargs.items() if k not in out})
    return out


def _yamlable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_yamlable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _yamlable(v) for k, v in value.items())
    return False


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def describe_arguments(target, given=None, exclude=(), hints=None):
    """What ``--help`` lists of ``target``'s constructor, in signature order: ``[(name, type, default, given)]`` as
    text (``default`` is ``"required"`` for an argument without one; ``given`` is the value ``given`` sets, else None),
    and whether it also takes ``**kwargs``. The types are the ones :func:`check_kwargs` checks against."""
    named, var_kw = _parameters(target)
    annotations, given = _annotations(target), given or {}
    rows = []
    for name, param in named.items():
        if name in exclude:
            continue
        default = "required" if param.default is _EMPTY else flow(param.default)
        value = flow(_untyped(given[name])) if name in given else None
        rows.append((name, type_name(_expected_type(param, annotations, hints or {})), default, value))
    rows += [(k, "any (**kwargs)", "the class's", flow(_untyped(v))) for k, v in given.items()
             if k not in named and k not in exclude]
    return rows, var_kw


def type_name(tp):
    """A type as a short text: ``int | None``, ``'epoch' | 'step'``, ``list[int]``, ``any``."""
    if tp is None or tp is typing.Any or tp is _EMPTY:
        return "any"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        # Optional[Union[int, float]] -> int | float | None (None last, as it reads)
        names = [type_name(a) for a in args if a is not type(None)] + (["None"] if type(None) in args else [])
        return " | ".join(dict.fromkeys(names))
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp))


def flow(value):
    """``value`` as one line of YAML (``null``, ``true``, ``[64, 64]``, ``norm``); an object YAML cannot hold as its
    repr."""
    if not _yamlable(value):
        return repr(value)
    text = yaml.dump(_plain(value), Dumper=_Dumper, default_flow_style=True, width=float("inf")).strip()
    return text[:-3].strip() if text.endswith("\n...") else text
