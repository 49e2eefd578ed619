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
"""
import collections.abc
import copy
import difflib
import importlib
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field

import yaml

__all__ = ["ConfigError", "Experiment", "find_config", "load_yaml", "parse_override", "apply_overrides",
           "check_structure", "import_class", "check_kwargs", "check_experiment", "instantiate", "with_defaults",
           "dump_yaml", "dumps", "one_line", "TOP_LEVEL", "COMPONENT_KEYS"]

TOP_LEVEL = ("trainer", "model", "data", "callbacks", "lr_scheduler", "seed", "name")
COMPONENT_KEYS = ("class_path", "init_args")
# lr_scheduler: a scheduler class built on the model's optimizer, plus the Trainer's scheduler options
SCHEDULER_OPTIONS = {"interval": typing.Literal["epoch", "step"], "frequency": int, "monitor": str, "name": str,
                     "strict": bool}
# YAML 1.2 floats without a dot ("1e-3", "5E4"), which PyYAML (YAML 1.1) leaves as strings
_EXP_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_EMPTY = inspect.Parameter.empty


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
    """The config in ``path`` as a dict, read with ``yaml.safe_load``; a syntax error names file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(err, "problem", None) or str(err)
        if isinstance(err, yaml.constructor.ConstructorError):  # e.g. !!python/object: safe_load builds no objects
            raise ConfigError(f"{where}: unsupported YAML tag ({problem}); configs are plain YAML, read with "
                              "yaml.safe_load") from None
        context = getattr(err, "context", None)
        raise ConfigError(f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")) from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the config must be a mapping with sections {', '.join(TOP_LEVEL)}; got a "
                          f"{_kind(config)}")
    return config


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
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None
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
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name={name!r}: expected a str, got {_kind(name)}")
    return config


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
    return Component(where, spec["class_path"], cls, init_args)


def check_experiment(config, trainer_cls, trainer_hints=None, bases=None, default_packages=None, required=("model",)):
    """Check a whole (merged) config: structure, Trainer arguments, and every class_path with its init_args.

    ``bases``: {"model": cls, "data": cls, "callbacks": cls} the classes they must subclass (optional).
    ``default_packages``: {"model": "models", ...} where a bare class name is looked up.
    ``lr_scheduler`` (optional): a scheduler class whose first argument is the optimizer, its ``init_args`` and the
    Trainer's scheduler options (``interval``, ``frequency``, ``monitor``, ``name``, ``strict``).
    Imports the classes (a config file is code) but builds nothing.
    """
    bases, packages = bases or {}, default_packages or {}
    config = check_structure(config, required)
    trainer_kwargs = check_kwargs(trainer_cls, config["trainer"], "trainer", hints=trainer_hints,
                                  exclude=("callbacks",))
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
    return Experiment(config, trainer_kwargs, model, data, callbacks, config.get("seed"), config.get("name"),
                      scheduler, options)


def instantiate(component, **extra):
    """Build ``component.cls(**component.init_args)``; a failing constructor becomes a one-line ConfigError."""
    try:
        return component.cls(**component.init_args, **extra)
    except Exception as err:
        if os.environ.get("MSFORGE_TRACEBACK"):
            raise
        raise ConfigError(f"{component.where}: {component.cls.__name__}(...) failed: {type(err).__name__}: {err} "
                          "(MSFORGE_TRACEBACK=1 shows the traceback)") from None


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
