"""experiments/config.py: loading, overrides and validation of experiment configs (pure Python, no MindSpore)."""
import importlib.util
import os
import sys
import textwrap
from typing import List, Literal, Optional, Union

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    name = "msforge_experiments_config"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", "config.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


C = _load()
ConfigError = C.ConfigError


def error_of(fn, *args, **kwargs):
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- classes to check against ------------------------------------------------------------------------------------------
class Base:
    pass


class Net(Base):
    def __init__(self, hidden=(64, 64), lr=1e-3, loss="mse", norm=True, depth=2, extra=None, opts=None):
        self.args = dict(hidden=hidden, lr=lr, loss=loss, norm=norm, depth=depth, extra=extra, opts=opts)


class Annotated(Base):
    def __init__(self, size: Optional[int] = None, mode: Literal["a", "b"] = "a", sizes: List[int] = (1,),
                 number: Union[int, float] = 1, path: os.PathLike = None):
        self.size, self.mode, self.sizes, self.number = size, mode, sizes, number


class Flexible(Base):
    def __init__(self, preset="small", **arch):
        self.preset, self.arch = preset, arch


class Required(Base):
    def __init__(self, monitor, patience=3):
        self.monitor, self.patience = monitor, patience


class Broken(Base):
    def __init__(self, size=1):
        raise ValueError(f"size={size}: too small\nsecond line")


class NotABase:
    def __init__(self, x=1):
        pass


class FakeTrainer:
    def __init__(self, max_epochs=None, max_steps=-1, precision="32", callbacks=None, limit_val_batches=None,
                 default_root_dir=None):
        pass


HINTS = {"max_epochs": Optional[int], "precision": Union[str, int], "limit_val_batches": Optional[Union[int, float]]}


# -- finding and reading files -----------------------------------------------------------------------------------------
def test_find_config_as_given_then_in_search_dirs_with_or_without_yaml(tmp_path, monkeypatch):
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "job.yaml").write_text("model: a.B\n")
    (tmp_path / "local.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert C.find_config("local.yaml", [str(exp)]) == "local.yaml"
    assert C.find_config(str(tmp_path / "local.yaml")) == str(tmp_path / "local.yaml")
    assert C.find_config("job.yaml", [str(exp)]) == os.path.join(str(exp), "job.yaml")
    assert C.find_config("job", [str(exp)]) == os.path.join(str(exp), "job.yaml")
    message = error_of(C.find_config, "nope.yaml", [str(exp)])
    assert "'nope.yaml' not found" in message and str(exp) in message and str(tmp_path) in message


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  max_epochs: 3\nmodel:\n  init_args: {hidden: [1, 2}\n")
    message = error_of(C.load_yaml, str(path))
    assert message.startswith(f"{path}:4:"), message
    assert "YAML syntax error" in message


def test_yaml_must_be_a_mapping_and_empty_is_empty(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "must be a mapping" in error_of(C.load_yaml, str(path))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert C.load_yaml(str(empty)) == {}


def test_yaml_is_read_with_safe_load_only(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    assert f"{path}:1:4: unsupported YAML tag" in error_of(C.load_yaml, str(path))


def test_dump_yaml_round_trips_with_header_comments(tmp_path):
    config = {"trainer": {"max_epochs": 3, "limit_val_batches": 0.5}, "model": {"class_path": "a.B",
                                                                               "init_args": {"hidden": [8, 8]}}}
    path = C.dump_yaml(config, str(tmp_path / "out.yaml"), header="line one\nline two")
    text = open(path).read()
    assert text.startswith("# line one\n# line two\n")
    assert yaml.safe_load(text) == config


# -- overrides ---------------------------------------------------------------------------------------------------------
def test_parse_override_values_are_yaml():
    assert C.parse_override("trainer.max_epochs=3") == (["trainer", "max_epochs"], 3)
    assert C.parse_override("model.init_args.hidden=[32,32]") == (["model", "init_args", "hidden"], [32, 32])
    assert C.parse_override("a.b=null") == (["a", "b"], None)
    assert C.parse_override("a.b=") == (["a", "b"], None)
    assert C.parse_override("a.b=x=y") == (["a", "b"], "x=y")
    assert C.parse_override("a=true") == (["a"], True)
    assert "expected key=value" in error_of(C.parse_override, "trainer.max_epochs")
    assert "not a dotted key" in error_of(C.parse_override, "trainer..max_epochs=3")
    assert "not valid YAML" in error_of(C.parse_override, "a.b=[1,")


def test_apply_overrides_sets_nested_keys_and_creates_missing_mappings():
    config = {"trainer": {"max_epochs": 1}, "model": {"class_path": "a.B"}}
    out = C.apply_overrides(config, ["trainer.max_epochs=3", "model.init_args.hidden=[32,32]", "seed=7",
                                     "trainer.max_epochs=4"])
    assert out == {"trainer": {"max_epochs": 4}, "model": {"class_path": "a.B", "init_args": {"hidden": [32, 32]}},
                   "seed": 7}
    assert config == {"trainer": {"max_epochs": 1}, "model": {"class_path": "a.B"}}  # not modified


def test_apply_overrides_in_lists_by_index_or_class_name():
    config = {"callbacks": [{"class_path": "callbacks.ModelCheckpoint", "init_args": {"monitor": "val_loss"}},
                            {"class_path": "callbacks.EarlyStopping", "init_args": {"patience": 3}}]}
    out = C.apply_overrides(config, ["callbacks.1.init_args.patience=5",
                                     "callbacks.ModelCheckpoint.init_args.monitor=val_mse",
                                     "callbacks.EarlyStopping.init_args.mode=max"])
    assert out["callbacks"][0]["init_args"] == {"monitor": "val_mse"}
    assert out["callbacks"][1]["init_args"] == {"patience": 5, "mode": "max"}
    assert "no index 2" in error_of(C.apply_overrides, config, ["callbacks.2.init_args.x=1"])
    message = error_of(C.apply_overrides, config, ["callbacks.Nope.init_args.x=1"])
    assert "ModelCheckpoint, EarlyStopping" in message
    assert "not a mapping" in error_of(C.apply_overrides, {"seed": 1}, ["seed.x=1"])


# -- structure ---------------------------------------------------------------------------------------------------------
def test_unknown_top_level_key_names_the_nearest_and_the_valid_ones():
    message = error_of(C.check_structure, {"trainr": {}, "model": "a.B"})
    assert message.startswith("unknown key trainr (did you mean trainer?)")
    assert "callbacks, data, lr_scheduler, model, name, seed, trainer" in message


def test_structure_normalises_sections_and_rejects_bad_shapes():
    out = C.check_structure({"model": "pkg.Net", "trainer": None, "callbacks": None})
    assert out["model"] == {"class_path": "pkg.Net", "init_args": {}}
    assert out["trainer"] == {} and out["callbacks"] == []
    assert "no 'model' section" in error_of(C.check_structure, {"trainer": {}})
    assert "no 'data' section" in error_of(C.check_structure, {"model": "a.B"}, required=("model", "data"))
    assert "trainer must be a mapping" in error_of(C.check_structure, {"model": "a.B", "trainer": [1]})
    assert "callbacks must be a list" in error_of(C.check_structure, {"model": "a.B", "callbacks": {"a": 1}})
    assert "model.init_args must be a mapping" in error_of(C.check_structure,
                                                           {"model": {"class_path": "a.B", "init_args": [1]}})
    message = error_of(C.check_structure, {"model": {"class_path": "a.B", "init_arg": {}}})
    assert "unknown key model.init_arg (did you mean model.init_args?)" in message
    assert "model.class_path is missing" in error_of(C.check_structure, {"model": {"init_args": {}}})
    assert "seed='x'" in error_of(C.check_structure, {"model": "a.B", "seed": "x"})
    assert "seed=True" in error_of(C.check_structure, {"model": "a.B", "seed": True})


# -- classes -----------------------------------------------------------------------------------------------------------
def test_import_class_and_its_one_line_errors(tmp_path, monkeypatch):
    assert C.import_class("collections.OrderedDict", "model") is __import__("collections").OrderedDict
    assert C.import_class("OrderedDict", "model", default_package="collections").__name__ == "OrderedDict"
    assert "no module named 'no_such_pkg'" in error_of(C.import_class, "no_such_pkg.Net", "model")
    message = error_of(C.import_class, "collections.OrderDict", "model")
    assert "has no 'OrderDict' (did you mean collections.OrderedDict?)" in message
    assert "not a class" in error_of(C.import_class, "os.path.join", "model")
    assert "give the full path" in error_of(C.import_class, "Net", "model")
    (tmp_path / "broken_mod.py").write_text("def f(:\n    pass\n")
    (tmp_path / "imports_missing.py").write_text("import not_installed_xyz\nclass A: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = error_of(C.import_class, "broken_mod.A", "data")
    assert "importing broken_mod failed: SyntaxError" in message and "line 1" in message
    message = error_of(C.import_class, "imports_missing.A", "data")
    assert "importing imports_missing failed" in message and "not_installed_xyz" in message


# -- arguments and types -----------------------------------------------------------------------------------------------
def test_unknown_init_arg_names_the_nearest_and_lists_the_valid_ones():
    message = error_of(C.check_kwargs, Net, {"hiden": [1]}, "model.init_args")
    assert message.startswith("unknown key model.init_args.hiden (did you mean model.init_args.hidden?)")
    assert "valid keys of model.init_args: depth, extra, hidden, loss, lr, norm, opts" in message
    message = error_of(C.check_kwargs, Net, {"qqq": 1}, "model.init_args")
    assert "did you mean" not in message and "valid keys" in message


def test_types_follow_the_defaults():
    ok = C.check_kwargs(Net, {"hidden": [32, 32], "lr": 1, "loss": "mae", "norm": False, "depth": 3,
                              "extra": {"anything": [1]}, "opts": "x"}, "model.init_args")
    assert ok["hidden"] == [32, 32] and ok["lr"] == 1 and ok["depth"] == 3
    cases = [("depth", "abc", "expected int, got str"), ("lr", "fast", "expected float, got str"),
             ("norm", 1, "expected bool, got int"), ("loss", 3, "expected str, got int"),
             ("hidden", 64, "expected a list, got int"), ("depth", 2.5, "expected int, got float")]
    for key, value, expected in cases:
        message = error_of(C.check_kwargs, Net, {key: value}, "model.init_args")
        assert message == f"model.init_args.{key}={value!r}: {expected}", message
    assert "expected int, got bool" in error_of(C.check_kwargs, Net, {"depth": True}, "m")
    assert "expected int, got None" in error_of(C.check_kwargs, Net, {"depth": None}, "m")


def test_exponent_floats_are_floats_where_a_float_fits():
    assert yaml.safe_load("1e-3") == "1e-3"  # PyYAML's YAML 1.1 rule this fixes
    assert C.check_kwargs(Net, {"lr": "1e-3"}, "m") == {"lr": 0.001}
    assert C.check_kwargs(Net, {"loss": "1e-3"}, "m") == {"loss": "1e-3"}  # a str parameter keeps the string
    assert C.check_kwargs(Flexible, {"lr": "5E-4"}, "m") == {"lr": 0.0005}  # **kwargs: untyped
    assert C.check_kwargs(Annotated, {"number": "2e3"}, "m") == {"number": 2000.0}


def test_types_follow_annotations_and_hints():
    ok = C.check_kwargs(Annotated, {"size": None, "mode": "b", "sizes": [1, 2], "number": 0.5, "path": "/x"}, "m")
    assert ok == {"size": None, "mode": "b", "sizes": [1, 2], "number": 0.5, "path": "/x"}
    assert "expected int or None, got str" in error_of(C.check_kwargs, Annotated, {"size": "abc"}, "m")
    assert "expected one of 'a', 'b', got str" in error_of(C.check_kwargs, Annotated, {"mode": "c"}, "m")
    assert "expected a list of int, got list" in error_of(C.check_kwargs, Annotated, {"sizes": [1, "x"]}, "m")
    assert C.check_kwargs(FakeTrainer, {"max_epochs": 3, "precision": 16, "limit_val_batches": 2}, "trainer",
                          hints=HINTS) == {"max_epochs": 3, "precision": 16, "limit_val_batches": 2}
    # Union[int, float] keeps ints ints (a batch count) and floats floats (a fraction)
    assert C.check_kwargs(FakeTrainer, {"limit_val_batches": 0.5}, "t", hints=HINTS) == {"limit_val_batches": 0.5}
    message = error_of(C.check_kwargs, FakeTrainer, {"max_epochs": "abc"}, "trainer", hints=HINTS)
    assert message == "trainer.max_epochs='abc': expected int or None, got str"
    # without the hint a None default says nothing: anything goes
    assert C.check_kwargs(FakeTrainer, {"max_epochs": "abc"}, "trainer") == {"max_epochs": "abc"}


def test_a_base_class_annotation_reaches_a_subclass_through_its_chained_signature():
    # VideoPredictionModule's loss is Union[str, dict]; a model subclass's signature carries it on
    from models.convgru import ConvGRUModule
    weights = {"mse": 1.0, "l1": 0.5}
    assert C.check_kwargs(ConvGRUModule, {"loss": weights}, "model.init_args") == {"loss": weights}
    assert C.check_kwargs(ConvGRUModule, {"loss": "l1+l2"}, "model.init_args") == {"loss": "l1+l2"}
    message = error_of(C.check_kwargs, ConvGRUModule, {"loss": 3}, "model.init_args")
    assert message == "model.init_args.loss=3: expected str or a mapping, got int"


def test_kwargs_constructors_take_unknown_keys_and_required_ones_must_be_given():
    assert C.check_kwargs(Flexible, {"patch": 4, "hidden": [8]}, "m") == {"patch": 4, "hidden": [8]}
    assert "missing required argument monitor (set callbacks.0.init_args.monitor)" in error_of(
        C.check_kwargs, Required, {"patience": 2}, "callbacks.0.init_args")
    message = error_of(C.check_kwargs, FakeTrainer, {"callbacks": []}, "trainer", exclude=("callbacks",))
    assert message == "trainer.callbacks cannot be set here"


# -- whole experiments -------------------------------------------------------------------------------------------------
def _config(**changes):
    config = {"seed": 3, "trainer": {"max_epochs": 2},
              "model": {"class_path": f"{__name__}.Net", "init_args": {"hidden": [8]}},
              "data": {"class_path": f"{__name__}.Annotated", "init_args": {"size": 4}},
              "callbacks": [{"class_path": f"{__name__}.Required", "init_args": {"monitor": "val_loss"}}]}
    config.update(changes)
    return config


def test_check_experiment_resolves_every_component():
    exp = C.check_experiment(_config(), FakeTrainer, HINTS, bases={"model": Base, "data": Base, "callbacks": Base})
    assert exp.trainer_kwargs == {"max_epochs": 2} and exp.seed == 3 and exp.name is None
    assert exp.model.cls is Net and exp.model.init_args == {"hidden": [8]}
    assert exp.data.cls is Annotated and [c.cls for c in exp.callbacks] == [Required]
    model = C.instantiate(exp.model)
    assert isinstance(model, Net) and model.args["hidden"] == [8]


def test_check_experiment_errors():
    bases = {"model": Base, "data": Base, "callbacks": Base}
    cases = [
        (_config(trainer={"max_epoch": 2}), "unknown key trainer.max_epoch (did you mean trainer.max_epochs?)"),
        (_config(trainer={"max_epochs": "abc"}), "trainer.max_epochs='abc': expected int or None, got str"),
        (_config(trainer={"callbacks": []}), "trainer.callbacks cannot be set here"),
        (_config(model={"class_path": f"{__name__}.NotABase"}), "is not a test_config.Base subclass"),
        (_config(model={"class_path": f"{__name__}.Nett"}), f"did you mean {__name__}.Net?"),
        (_config(data={"class_path": f"{__name__}.Annotated", "init_args": {"size": "x"}}),
         "data.init_args.size='x': expected int or None, got str"),
        (_config(callbacks=[{"class_path": f"{__name__}.Required"}]), "missing required argument monitor"),
    ]
    for config, expected in cases:
        message = error_of(C.check_experiment, config, FakeTrainer, HINTS, bases=bases)
        assert expected in message, (expected, message)


class FakeScheduler:
    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma


def test_lr_scheduler_section_takes_the_trainer_options_and_leaves_the_optimizer_to_the_model():
    spec = {"class_path": f"{__name__}.FakeScheduler", "init_args": {"step_size": 2, "gamma": "5e-1"},
            "interval": "step", "monitor": "val_loss", "frequency": 1}
    exp = C.check_experiment(_config(lr_scheduler=spec), FakeTrainer)
    assert exp.lr_scheduler.cls is FakeScheduler and exp.lr_scheduler.init_args == {"step_size": 2, "gamma": 0.5}
    assert exp.lr_scheduler_options == {"interval": "step", "monitor": "val_loss", "frequency": 1}
    scheduler = C.instantiate(exp.lr_scheduler, optimizer="opt")
    assert (scheduler.optimizer, scheduler.step_size) == ("opt", 2)
    bare = {"class_path": "FakeScheduler", "init_args": {"step_size": 1}}  # looked up in the default package
    exp = C.check_experiment(_config(lr_scheduler=bare), FakeTrainer, default_packages={"lr_scheduler": __name__})
    assert exp.lr_scheduler.cls is FakeScheduler and exp.lr_scheduler_options == {}
    cases = [
        ({**spec, "interval": "weekly"}, "lr_scheduler.interval='weekly': expected one of 'epoch', 'step', got str"),
        ({**spec, "frequency": "often"}, "lr_scheduler.frequency='often': expected int, got str"),
        ({**spec, "monitr": "x"}, "unknown key lr_scheduler.monitr (did you mean lr_scheduler.monitor?)"),
        ({**spec, "init_args": {"gamma": 0.5}}, "missing required argument step_size"),
        ({**spec, "init_args": {"step_size": 1, "optimizer": 1}}, "lr_scheduler.init_args.optimizer cannot be set"),
    ]
    for bad, expected in cases:
        assert expected in error_of(C.check_experiment, _config(lr_scheduler=bad), FakeTrainer), expected


def test_instantiate_turns_a_failing_constructor_into_one_line(monkeypatch):
    monkeypatch.delenv("MSFORGE_TRACEBACK", raising=False)
    exp = C.check_experiment(_config(model={"class_path": f"{__name__}.Broken", "init_args": {"size": 0}}),
                             FakeTrainer)
    message = error_of(C.instantiate, exp.model)
    # the key is found by building without it: Broken() with its default fails too, so the message names it
    assert message.startswith("model.init_args.size=0: Broken(...) failed: ValueError: size=0: too small second line")
    monkeypatch.setenv("MSFORGE_TRACEBACK", "1")
    with pytest.raises(ValueError):
        C.instantiate(exp.model)


def test_with_defaults_records_every_yaml_representable_argument():
    out = C.with_defaults(Net, {"lr": 0.01, "hidden": (8, 8)})
    assert out == {"hidden": [8, 8], "lr": 0.01, "loss": "mse", "norm": True, "depth": 2, "extra": None, "opts": None}
    assert list(out) == ["hidden", "lr", "loss", "norm", "depth", "extra", "opts"]  # signature order
    assert C.with_defaults(Flexible, {"patch": 4}) == {"preset": "small", "patch": 4}
    assert "callbacks" not in C.with_defaults(FakeTrainer, {}, exclude=("callbacks",))

    class WithObjectDefault:
        def __init__(self, a=object(), b=1):
            pass

    assert C.with_defaults(WithObjectDefault, {}) == {"b": 1}
    text = yaml.safe_dump(out)
    assert yaml.safe_load(text) == out


def test_every_message_fits_one_line_even_from_multiline_sources(tmp_path):
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        a: 1
          b: 2
        """))
    assert "\n" not in error_of(C.load_yaml, str(tmp_path / "m.yaml"))
    assert str(ConfigError("a\nb\n\tc")) == "a b c"


# -- bad values refused before anything is built (issue 18) -----------------------------------------------------------
BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}' if b else '1'] * 9)}]\n"
               for a, b in zip("abcdefghi", [None, *"abcdefgh"]))  # 9**9 values once expanded


def test_a_key_given_twice_is_an_error_naming_the_dotted_key_and_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("trainer:\n  max_epochs: 3\nmodel:\n  init_args: {lr: 0.1, lr: 0.2}\n")
    message = error_of(C.load_yaml, str(path))
    assert message.startswith(f"{path}:4:") and "duplicate key model.init_args.lr (first given at line 4)" in message
    path.write_text("trainer:\n  max_epochs: 3\n  max_epochs: 4\n")
    assert "duplicate key trainer.max_epochs (first given at line 2)" in error_of(C.load_yaml, str(path))
    path.write_text("base: &b {lr: 1}\nmodel:\n  <<: *b\n  lr: 2\n")  # a merge key may be overridden
    assert C.load_yaml(str(path))["model"] == {"lr": 2}
    assert "duplicate key a" in error_of(C.parse_override, "x={a: 1, a: 2}")


@pytest.mark.parametrize("where", ["top", "argument", "override"])
def test_an_alias_bomb_is_refused_within_a_second_naming_where(tmp_path, where):
    import time

    start = time.monotonic()
    if where == "override":
        flow = "{" + BOMB.strip().replace("\n", ", ") + "}"  # the same anchors as one flow mapping
        message = error_of(C.parse_override, f"model.init_args.x={flow}")
        assert "override model.init_args.x" in message
    else:
        path = tmp_path / "bomb.yaml"
        text = BOMB + "model:\n  class_path: a.B\n  init_args: {hidden: *i}\n" if where == "argument" else BOMB
        path.write_text(text)
        message = error_of(C.load_yaml, str(path))
        if where == "argument":
            assert f"{path}: model.init_args.hidden: more than 100,000 values" in message
    assert "alias bomb" in message
    assert time.monotonic() - start < 1.0


def test_recursive_aliases_deep_nesting_and_huge_files_are_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("model:\n  init_args:\n    x: &r [*r]\n")
    assert "model.init_args.x: nested more than 32 levels deep" in error_of(C.load_yaml, str(path))
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    message = error_of(C.load_yaml, str(path))
    assert message.startswith(f"{path}:1:") and "nested more than 32" in message
    path.write_text("x: " + "[1]" + " " * (C.MAX_CONFIG_BYTES + 1) + "\n")
    assert "a config is at most" in error_of(C.load_yaml, str(path))


def test_nan_anywhere_names_and_seed_range_are_checked_with_the_structure():
    assert error_of(C.check_structure, {"model": {"class_path": "a.B", "init_args": {"w": [1.0, float("nan")]}}}) \
        .startswith("model.init_args.w.1=nan: not a number")
    for name in ("../x", "a/b", ".", "..", " "):
        assert f"name={name!r}: must be a plain folder name" in error_of(C.check_structure, {"model": "a.B",
                                                                                            "name": name})
    assert "seed=-1: must be in [0, 2**32 - 1]" in error_of(C.check_structure, {"model": "a.B", "seed": -1})
    assert C.check_structure({"model": "a.B", "name": "run-2", "seed": 2**32 - 1})["name"] == "run-2"


def test_value_rules_apply_to_every_component_by_argument_name():
    cases = [("lr", 0, "must be a finite number > 0"), ("lr", float("inf"), "must be a finite number > 0"),
             ("lr", -1e-3, "must be a finite number > 0"), ("weight_decay", -0.1, "must be a finite number >= 0"),
             ("batch_size", 0, "must be an int >= 1"), ("step_size", 0, "must be an int >= 1")]
    for key, value, expected in cases:
        assert error_of(C.check_values, {key: value}, "m.init_args") == f"m.init_args.{key}={value!r}: {expected}"
    C.check_values({"lr": 1e-3, "batch_size": 1, "weight_decay": 0.0, "eval_batch_size": None}, "m")
    C.check_values({"lr": "fast"}, "m", numbers_only=True)  # before the type check: that check's message wins


def test_output_folders_must_be_creatable_and_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    assert C.writable_dir_problem(str(tmp_path / "new" / "deeper")) is None
    assert C.writable_dir_problem(str(tmp_path)) is None
    assert "is a file, not a folder" in C.writable_dir_problem(str(tmp_path / "file" / "runs"))
    message = error_of(C.check_values, {"dirpath": str(tmp_path / "file" / "ckpts")}, "callbacks.0.init_args")
    assert message.startswith("callbacks.0.init_args.dirpath=") and "is a file, not a folder" in message
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        assert "is not writable" in C.writable_dir_problem(str(tmp_path / "ro" / "runs"))
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_check_early_uses_the_trainer_check_and_the_run_folder(tmp_path):
    def trainer_check(kwargs):
        if kwargs.get("max_epochs") == 0:
            err = ValueError("max_epochs=0: trains nothing")
            err.key = "max_epochs"
            raise err

    config = _config(trainer={"max_epochs": 0})
    assert error_of(C.check_early, config, trainer_check=trainer_check) == "trainer.max_epochs=0: trains nothing"
    (tmp_path / "f").write_text("x")
    config = _config(trainer={"default_root_dir": str(tmp_path / "f")})
    assert "trainer.default_root_dir=" in error_of(C.check_early, config)
    assert error_of(C.check_experiment, config, FakeTrainer, HINTS) == error_of(C.check_early, config)
    assert "model.init_args.lr=0" in error_of(C.check_early, _config(model={"class_path": "x.Y",
                                                                         "init_args": {"lr": 0}}))


class PicksyNet(Base):
    """Fails with a message that names no argument, for one bad value of ``hidden``."""

    def __init__(self, hidden=None, depth=2, lr=0.1):
        [int(h) for h in hidden or ()]


def test_a_failing_constructor_names_the_key_it_failed_on():
    spec = {"class_path": f"{__name__}.PicksyNet", "init_args": {"depth": 3, "hidden": "abc", "lr": 0.5}}
    exp = C.check_experiment(_config(model=spec), FakeTrainer)
    message = error_of(C.instantiate, exp.model)
    assert message.startswith("model.init_args.hidden='abc': PicksyNet(...) failed: ValueError: invalid literal")
    assert C.culprit(exp.model, ValueError("x")) == "hidden"
