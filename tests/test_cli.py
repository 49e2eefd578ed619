"""experiments/run.py's ``--print_config`` and ``--help CONFIG`` (issue 17, part 5): real ``python experiments/run.py``
processes on the shipped configs, each in an empty folder that must stay empty. No training: the classes are imported
and their signatures read, nothing is built (a class whose constructor raises proves it)."""
import os
import re

import pytest
import yaml

from test_config import C
from test_run import ROOT, run_cli

CONVLSTM = os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")
SIMVP = os.path.join(ROOT, "experiments", "simvp_mnist.yaml")

# constructors that must not run: --print_config and --help only import the classes and read their signatures
TRAP_MODULE = '''
from msforge import DataModule, Module


class Trap(Module):
    def __init__(self, lr=0.1, width=4):
        super().__init__()
        raise RuntimeError("Trap was built")


class TrapData(DataModule):
    def __init__(self, batch_size=2):
        super().__init__()
        raise RuntimeError("TrapData was built")
'''
TRAP_YAML = """\
trainer: {max_epochs: 1}
model: {class_path: cli_trap.Trap}
data: {class_path: cli_trap.TrapData}
"""


def cli(folder, *args, pythonpath=None):
    """run.py in ``folder`` (empty, and checked to stay so); returns the finished process."""
    folder.mkdir(exist_ok=True)
    before = sorted(os.listdir(folder))
    result = run_cli(folder, *args, pythonpath=pythonpath, timeout=120)
    assert sorted(os.listdir(folder)) == before, f"run.py {' '.join(args)} wrote {os.listdir(folder)}"
    return result


def error_line(result):
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not result.stdout
    return lines[0]


def test_print_config_is_every_default_and_the_overrides_and_writes_nothing(tmp_path):
    text = open(CONVLSTM).read()
    for key in ("gradient_clip_algorithm", "weight_decay", "download", "save_top_k", "check_finite"):
        assert key not in text  # so each comes from a signature below
    result = cli(tmp_path / "cwd", "convlstm_mnist.yaml", "model.init_args.lr=0.005",
                 "callbacks.EarlyStopping.init_args.patience=7", "--print_config")
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr
    config = yaml.safe_load(result.stdout)
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    assert trainer["gradient_clip_algorithm"] == "norm" and trainer["max_steps"] == -1  # the Trainer's defaults
    assert trainer["max_epochs"] == 1 and trainer["name"] == "convlstm_mnist" and trainer["seed"] == 0  # the file's
    assert model["lr"] == 0.005  # the override
    assert model["weight_decay"] == 0.0 and model["hidden"] == [32, 32]  # the base's default, the file's value
    assert data["download"] is False and data["batch_size"] == 16
    checkpoint, early_stopping = config["callbacks"][0]["init_args"], config["callbacks"][1]["init_args"]
    assert checkpoint["save_top_k"] == 1 and checkpoint["monitor"] == "val_mse"
    assert early_stopping["patience"] == 7 and early_stopping["check_finite"] is True
    scheduler = config["lr_scheduler"]  # the file's
    assert scheduler["class_path"] == "msforge.schedulers.OneCycleLR" and scheduler["interval"] == "step"
    assert scheduler["init_args"]["total_steps"] == 2000 and scheduler["init_args"]["max_lr"] == 3e-3


def test_print_config_has_the_scheduler_section_with_its_defaults(tmp_path):
    result = cli(tmp_path / "cwd", "convlstm_mnist.yaml",
                 "lr_scheduler={class_path: StepLR, init_args: {step_size: 3}, interval: step}", "--print_config")
    assert result.returncode == 0, result.stderr
    scheduler = yaml.safe_load(result.stdout)["lr_scheduler"]
    assert scheduler["class_path"] == "StepLR" and scheduler["interval"] == "step"
    assert scheduler["init_args"]["step_size"] == 3 and scheduler["init_args"]["gamma"] == 0.1
    assert "optimizer" not in scheduler["init_args"]  # the model's, not the config's


@pytest.mark.parametrize("name", ["convlstm_mnist.yaml", "simvp_mnist.yaml"])
def test_the_printed_config_prints_the_same_text_again(name, tmp_path):
    first = cli(tmp_path / "cwd", name, "trainer.max_epochs=3", "--print_config")
    assert first.returncode == 0, first.stderr
    assert yaml.safe_load(first.stdout)["trainer"]["max_epochs"] == 3
    printed = tmp_path / "printed.yaml"
    printed.write_text(first.stdout)
    again = cli(tmp_path / "cwd", str(printed), "--print_config")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_print_config_is_what_dry_run_prints(tmp_path):
    """One resolved config, not two: --dry-run builds everything and prints it, --print_config only checks."""
    small = ["data.init_args.samples_per_epoch=4", "data.init_args.val_size=4", "data.init_args.test_size=4",
             "data.init_args.batch_size=2", "model.init_args.hid_T=8", "model.init_args.hid_S=4"]
    printed = cli(tmp_path / "cwd", "simvp_mnist.yaml", *small, "--print_config")
    dry = cli(tmp_path / "cwd", "simvp_mnist.yaml", *small, "--dry-run")
    assert printed.returncode == 0 and dry.returncode == 0, printed.stderr + dry.stderr
    assert yaml.safe_load(printed.stdout)["model"]["init_args"]["layer_scale_init"] == 0.01  # SimVP's default
    assert printed.stdout == dry.stdout


def test_print_config_and_help_build_nothing(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "cli_trap.py").write_text(TRAP_MODULE)
    (code / "trap.yaml").write_text(TRAP_YAML)
    config = str(code / "trap.yaml")
    printed = cli(tmp_path / "cwd", config, "--print_config", pythonpath=code)
    assert printed.returncode == 0, printed.stderr
    resolved = yaml.safe_load(printed.stdout)
    assert resolved["model"]["init_args"] == {"lr": 0.1, "width": 4}
    assert resolved["data"]["init_args"] == {"batch_size": 2}
    assert resolved["trainer"]["name"] == "trap"  # the config file's name, as a run would use
    helped = cli(tmp_path / "cwd", config, "--help", pythonpath=code)
    assert helped.returncode == 0, helped.stderr
    assert re.search(r"^  model\.init_args\.width +\(type: int, default: 4\)$", helped.stdout, re.M), helped.stdout
    dry = cli(tmp_path / "cwd", config, "--dry-run", pythonpath=code)  # the trap does go off when things are built
    assert "TrapData was built" in error_line(dry)


def test_help_with_a_config_lists_its_classes_arguments(tmp_path):
    result = cli(tmp_path / "cwd", "convlstm_mnist.yaml", "model.init_args.lr=0.005", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for option in ("--stage", "--ckpt", "--devices", "--dry-run", "--print_config"):  # today's options stay
        assert option in out
    classes = out[out.index("\nArguments of the classes in "):]
    headings = [ln for ln in classes.splitlines() if re.match(r"^\w[\w.]*: ", ln)]
    assert headings == ["trainer: msforge.Trainer", "model: models.convlstm.ConvLSTMModule",
                        "data: datamodules.moving_mnist.MovingMNISTDataModule",
                        "callbacks.0: callbacks.ModelCheckpoint", "callbacks.1: callbacks.EarlyStopping",
                        "callbacks.2: callbacks.TensorBoard", "callbacks.3: callbacks.LearningRateMonitor",
                        "lr_scheduler: msforge.schedulers.OneCycleLR"]

    def line(key):
        found = [ln for ln in out.splitlines() if ln.split()[:1] == [key]]
        assert len(found) == 1, f"{key}: {found}"
        return " ".join(found[0].split()[1:])

    assert line("model.init_args.lr") == "(type: float, default: 0.001; config: 0.005)"  # the override's value
    assert line("model.init_args.weight_decay") == "(type: float, default: 0.0)"
    assert line("trainer.gradient_clip_algorithm") == "(type: str, default: norm)"
    assert line("trainer.max_epochs") == "(type: int | None, default: null; config: 1)"
    assert line("data.init_args.batch_size") == "(type: int, default: 16; config: 16)"
    assert line("callbacks.EarlyStopping.init_args.patience") == "(type: int, default: 3; config: 4)"
    assert line("model.init_args.hidden") == "(type: any (**kwargs), default: the class's; config: [32, 32])"
    assert "trainer.callbacks" not in out  # the config's callbacks section sets them


def test_help_with_simvp_names_its_own_arguments(tmp_path):
    result = cli(tmp_path / "cwd", "simvp_mnist.yaml", "--help")
    assert result.returncode == 0, result.stderr
    assert "model: models.simvp.SimVP" in result.stdout
    assert re.search(r"^  model\.init_args\.hid_T +\(type: int, default: 128; config: 128\)$", result.stdout, re.M)
    assert re.search(r"^  trainer\.max_time +\(type: .*; config: 00:00:08:00\)$", result.stdout, re.M)


def test_help_without_a_config_is_todays_help(tmp_path):
    for args in (["--help"], ["-h"], ["--stage", "fit", "--help"]):
        result = cli(tmp_path / "cwd", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: experiments/run.py") and "--print_config" in result.stdout
        assert "Arguments of the classes" not in result.stdout


def test_a_bad_config_with_help_or_print_config_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "bad_class.yaml").write_text(open(CONVLSTM).read().replace("models.convlstm.ConvLSTMModule",
                                                                          "models.convlstm.ConvLSTMModul"))
    (tmp_path / "syntax.yaml").write_text("trainer: {max_epochs: 1\n")
    cases = [(["no_such.yaml", "--help"], "config file 'no_such.yaml' not found"),
             ([str(tmp_path / "bad_class.yaml"), "--help"], "did you mean models.convlstm.ConvLSTMModule?"),
             ([str(tmp_path / "syntax.yaml"), "--help"], "YAML syntax error"),
             (["convlstm_mnist.yaml", "modle.init_args.lr=1", "--help"], "unknown key modle (did you mean model?)"),
             (["convlstm_mnist.yaml", "data.init_args.batch_sise=1", "--print_config"],
              "unknown key data.init_args.batch_sise (did you mean data.init_args.batch_size?)"),
             (["convlstm_mnist.yaml", "model.init_args.lr=0", "--print_config"], "model.init_args.lr=0: must be"),
             (["convlstm_mnist.yaml", "trainer.max_epochs=x", "--print_config"], "trainer.max_epochs='x'")]
    for args, expected in cases:
        assert expected in error_line(cli(tmp_path / "cwd", *args)), args


def test_argument_rows_types_and_flow_values():
    """The helpers --help uses (pure Python)."""
    from typing import Literal, Optional, Union

    class Thing:
        def __init__(self, size: int, rate: Optional[Union[int, float]] = None, mode: Literal["a", "b"] = "a",
                     shape=(1, 2), flag=True, obj=object, **rest):
            pass

    rows, var_kw = C.describe_arguments(Thing, {"size": 3, "extra": "1e-3"}, exclude=("flag",))
    assert var_kw
    assert rows == [("size", "int", "required", "3"), ("rate", "int | float | None", "null", None),
                    ("mode", "'a' | 'b'", "a", None), ("shape", "list", "[1, 2]", None),
                    ("obj", "any", "<class 'object'>", None), ("extra", "any (**kwargs)", "the class's", "0.001")]
    assert [C.flow(v) for v in (None, "32", "null", 1e-3, {"a": [1]})] == ["null", "'32'", "'null'", "0.001",
                                                                          "{a: [1]}"]
