#!/usr/bin/env python
"""Run an experiment described by a YAML config.

    python experiments/run.py CONFIG.yaml [key=value ...] [--stage STAGES] [--ckpt PATH|last|best] [--devices N]
                              [--dry-run] [--print_config]
    python experiments/run.py CONFIG.yaml [key=value ...] --help

CONFIG is looked up as given, then in the current folder, then in ``experiments/`` (``.yaml`` may be left off).
Sections: ``trainer`` (msforge.Trainer arguments), ``model`` and ``data`` (``class_path`` + ``init_args``),
``callbacks`` (a list of those), and optionally ``lr_scheduler`` (a scheduler class built on the optimizer the model's
``configure_optimizers`` returns, e.g. ``msforge.schedulers.ReduceLROnPlateau``, with ``init_args`` and the Trainer's
scheduler options ``interval``, ``frequency``, ``monitor``), ``seed`` (seeds Python, NumPy and MindSpore before the
model is built, and the Trainer) and ``name`` (the run folder is ``<trainer.default_root_dir>/<name>/version_<N>``;
default: the config file's name). A bare class name is looked up in ``models``, ``datamodules``, ``callbacks`` or
``msforge.schedulers``.

A config file is code: its class_paths are imported and their constructors run. Only run config files you trust.
(YAML is read with ``yaml.safe_load``; only the file you name and the overrides you type are read.)

Overrides: ``trainer.max_epochs=3``, ``model.init_args.hidden=[32,32]``,
``callbacks.EarlyStopping.init_args.patience=5`` (a list entry by index or class name); values are YAML.

Everything is checked before anything runs or is written, and a refused run leaves no run folder. First, in a
fraction of a second and before MindSpore is imported: YAML syntax and keys given twice (file and line), size (an
alias bomb is refused at once), NaN anywhere, ``name`` being a folder name, the Trainer's values
(``msforge.arguments.check_trainer_arguments``: epochs, steps, intervals, limits, ...), the run folder's parent being
creatable and writable, and the values every component shares by name (learning rates finite and > 0, batch sizes
and scheduler periods >= 1; ``VALUE_RULES`` in experiments/config.py). Then: unknown keys (with the nearest valid
one), wrong types (against annotations, else the defaults' types), a missing config or checkpoint, a checkpoint of
another model or one that cannot resume a fit, a class_path that does not import, a constructor or data module that
rejects its arguments (named by its ``init_args`` key), and the data: ``prepare_data`` and ``setup`` run here first and
each stage's loader must give batches (a missing or empty test file is found now). Each prints one line
``error: ...`` on stderr and exits with code 2. What still fails once the stages run but before the first training
step (MindSpore rejecting a shape when it compiles) is reported the same way and its run folder removed; MindSpore's
compile report goes to a temporary folder (MS_OM_PATH) rather than the current one, and its log shows errors only
(GLOG_v=3; set either yourself to choose). MSFORGE_TRACEBACK=1 shows tracebacks. Resuming with hyper-parameters
that differ from the checkpoint's prints one ``warning:`` line naming them.

Stages (``--stage``, comma-separated, in order; default ``fit,test``):
  fit       train (``--ckpt`` resumes exactly where that checkpoint was taken)
  validate  validation metrics
  test      test metrics in a table beside two baselines computed on the same test batches (all-black frames and the
            last input frame copied; video data only), written to ``test_metrics.json``; a PNG of input / target /
            prediction rows for the first test sequences (``test_predictions.png``)
  predict   the model's predictions on the data module's predict loader, saved as ``predictions.npy``
  export    MindIR export (``model.mindir``) of the model on one example input, reloaded with ``mindspore.load`` and
            checked to give the same output (within 1e-5)
After ``fit`` the later stages use the best checkpoint (or ``last`` when nothing is monitored); without ``fit`` they
use ``--ckpt`` (or the weights the model was built with, for a quick look). ``test_metrics.json`` names its
checkpoint relative to the run folder.

Outputs go to the run folder ``trainer.log_dir``: the resolved config (``config.yaml``: every argument, defaults
included, reusable as a config), checkpoints, logs and the files above.

``--devices N`` (N > 1) re-launches this command under ``msrun`` with N local workers and
``trainer.strategy=data_parallel``. SIGTERM / SIGINT anywhere in fit (the last validation included) save a checkpoint
(the Trainer says how to resume) and exit with code 128 + the signal number; later stages do not run. (Once a graph
has run, MindSpore's own handler turns a Ctrl-C into a SIGTERM, so it exits with 143 rather than 130.) ``--dry-run``
checks and builds everything, prints the resolved config (and the msrun command) and exits without training or writing
a run folder (the data module's ``prepare_data`` still runs, so a dataset with ``download: true`` is fetched).
``--print_config`` prints the same resolved config (overrides applied, every constructor argument's default filled
in: trainer, model, data, each callback, lr_scheduler) after the checks that import the classes and read their
signatures, and exits: nothing is built, no data is read, nothing is written; the output is itself a config that
prints the same again. ``--help`` with a CONFIG adds, after the options, the arguments of the classes it names, one
line each under a heading per section: the key to set (``model.init_args.lr``), its type, its default and the value
the config (with overrides) gives it.
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ("fit", "validate", "test", "predict", "export")
DEFAULT_STAGES = ("fit", "test")
DEFAULT_PACKAGES = {"model": "models", "data": "datamodules", "callbacks": "callbacks",
                    "lr_scheduler": "msforge.schedulers"}
EXPORT_TOLERANCE = 1e-5
PNG_SEQUENCES = 4


def _load_config_module():
    """experiments/config.py under a name of its own (a plain ``import config`` could shadow a user's module)."""
    name = "msforge_experiments_config"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "config.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


C = _load_config_module()
ConfigError = C.ConfigError


def _early_arguments():
    """msforge/arguments.py (the Trainer's value checks, pure Python) without importing msforge, which imports
    MindSpore: found with importlib's finder, which executes nothing, and loaded under a name of its own."""
    name = "msforge_arguments_early"
    if name not in sys.modules:
        package = importlib.util.find_spec("msforge")
        if package is None or not package.submodule_search_locations:
            raise ConfigError("msforge is not installed (pip install -e . in the repository)")
        path = os.path.join(list(package.submodule_search_locations)[0], "arguments.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# == command line =====================================================================================================
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def build_parser():
    parser = _Parser(prog="experiments/run.py", description="Run an msforge experiment from a YAML config.",
                     epilog="With a CONFIG, --help also lists the arguments of the classes it names (types, defaults, "
                            "the config's values). See the docstring of experiments/run.py for the config format.")
    parser.add_argument("config", help="the YAML config (as given, in the current folder or in experiments/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, values in YAML")
    parser.add_argument("--stage", default=",".join(DEFAULT_STAGES),
                        help=f"comma-separated stages among {', '.join(STAGES)} (default: fit,test)")
    parser.add_argument("--ckpt", default=None, help="checkpoint PATH, or last / best of this experiment's runs")
    parser.add_argument("--devices", type=int, default=1, help="N > 1: data parallel over N local workers (msrun)")
    parser.add_argument("--dry-run", action="store_true", help="check and build everything, print the resolved "
                                                               "config; train nothing, write no run folder")
    parser.add_argument("--print_config", "--print-config", action="store_true",
                        help="print the resolved config (overrides applied, every default filled in) as YAML and "
                             "exit; builds nothing, writes nothing")
    return parser


USAGE = ("usage: experiments/run.py CONFIG.yaml [key=value ...] [--stage fit,test|validate|predict|export] "
         "[--ckpt PATH|last|best] [--devices N] [--dry-run] [--print_config]")
HELP_FLAGS = ("-h", "--help")


def parse_args(argv):
    wants_help = bool(set(HELP_FLAGS) & set(argv))
    if not [a for a in argv if not a.startswith("-")] and not wants_help:
        raise ConfigError(f"no CONFIG given: name a YAML config, e.g. convlstm_mnist.yaml; {USAGE}")
    if wants_help:
        # with a CONFIG, main() adds its classes' arguments to the help; without one (or with arguments argparse
        # cannot read), today's help
        try:
            args = build_parser().parse_intermixed_args([a for a in argv if a not in HELP_FLAGS])
        except ConfigError:
            build_parser().parse_args(["--help"])  # prints the help and exits 0
        args.help, args.argv = True, list(argv)
        return args
    args = build_parser().parse_intermixed_args(argv)
    args.help = False
    args.argv = list(argv)
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"--stage {stage!r}: use one or more of {', '.join(STAGES)} (comma-separated)")
    if not stages:
        raise ConfigError(f"--stage is empty: use one or more of {', '.join(STAGES)}")
    args.stages = stages
    if args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: must be >= 1")
    if args.ckpt is not None and args.ckpt not in ("last", "best") and not os.path.isfile(args.ckpt):
        raise ConfigError(f"--ckpt {args.ckpt!r}: no such checkpoint file (give a path, 'last' or 'best')")
    for text in args.overrides:
        if "=" not in text:
            raise ConfigError(f"unexpected argument {text!r}: overrides are key=value (e.g. trainer.max_epochs=3)")
    return args


# == msrun ============================================================================================================
def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def msrun_command(devices, config_path, overrides=(), stages=None, ckpt=None, port=None, log_dir=None,
                  msrun="msrun", script=None):
    """The msrun command line that runs this script on ``devices`` local workers with data parallelism."""
    port = free_port() if port is None else port
    log_dir = log_dir or tempfile.mkdtemp(prefix="msforge_msrun_")
    command = [msrun, f"--worker_num={devices}", f"--local_worker_num={devices}", "--master_addr=127.0.0.1",
               f"--master_port={port}", "--join=True", f"--log_dir={log_dir}",
               script or os.path.abspath(__file__), os.path.abspath(config_path), *overrides]
    if stages is not None:
        command += ["--stage", ",".join(stages)]
    if ckpt is not None:
        command += ["--ckpt", ckpt if ckpt in ("last", "best") else os.path.abspath(ckpt)]
    return command + ["trainer.strategy=data_parallel"]


def _rank():
    """This process's rank under msrun (0 when not launched by it), known before MindSpore's communication starts."""
    try:
        return int(os.environ.get("RANK_ID", "0"))
    except ValueError:
        return 0


# == building the run =================================================================================================
class Run:
    """Everything built from a checked config."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _stage_for_setup(stage):
    return {"export": "test"}.get(stage, stage)


def check_config(config_path, config):
    """Check the merged ``config`` (experiments/config.py, with the Trainer's own ``check_trainer_arguments``): its
    classes are imported and their signatures read; nothing is built and nothing written. Returns the
    ``Experiment`` and the Trainer class; raises ConfigError."""
    import msforge  # noqa: F401  (first: caps oneDNN's ISA before MindSpore loads)
    from msforge import Callback, DataModule, Module, Trainer
    from msforge.arguments import check_trainer_arguments

    exp = C.check_experiment(config, Trainer, {},
                             bases={"model": Module, "data": DataModule, "callbacks": Callback},
                             default_packages=DEFAULT_PACKAGES, required=("model", "data"),
                             trainer_check=check_trainer_arguments, default_name=_default_name(config_path))
    return exp, Trainer


def _default_name(config_path):
    return os.path.splitext(os.path.basename(config_path))[0]


def resolve(exp, trainer_cls, config_path):
    """The Trainer's arguments (``name`` and ``seed`` filled in from the config) and the resolved config: every
    section with every constructor argument, defaults included, as ``config.yaml``, ``--dry-run`` and
    ``--print_config`` show it (reusable as a config)."""
    trainer_kwargs = dict(exp.trainer_kwargs)
    trainer_kwargs.setdefault("name", exp.name or _default_name(config_path))
    if exp.seed is not None:
        trainer_kwargs.setdefault("seed", exp.seed)
    resolved = {}
    if exp.seed is not None:
        resolved["seed"] = exp.seed
    if exp.name is not None:
        resolved["name"] = exp.name
    resolved["trainer"] = C.with_defaults(trainer_cls, trainer_kwargs, exclude=("callbacks",))
    for key, comp in (("model", exp.model), ("data", exp.data)):
        resolved[key] = {"class_path": comp.class_path, "init_args": C.with_defaults(comp.cls, comp.init_args)}
    resolved["callbacks"] = [{"class_path": c.class_path, "init_args": C.with_defaults(c.cls, c.init_args)}
                             for c in exp.callbacks]
    if exp.lr_scheduler is not None:
        resolved["lr_scheduler"] = {
            "class_path": exp.lr_scheduler.class_path,
            "init_args": C.with_defaults(exp.lr_scheduler.cls, exp.lr_scheduler.init_args, exclude=("optimizer",)),
            **exp.lr_scheduler_options}
    return trainer_kwargs, resolved


def prepare(config_path, config, args):
    """Check the merged ``config`` (:func:`check_config`) and build trainer, model, data and callbacks; raises
    ConfigError. Every value is checked before anything is built, and nothing here writes a file."""
    import msforge  # first: caps oneDNN's ISA before MindSpore loads
    from msforge import Callback, seed_everything

    exp, Trainer = check_config(config_path, config)
    trainer_kwargs, resolved = resolve(exp, Trainer, config_path)
    _check_device(trainer_kwargs.get("device_target", "auto"))
    datamodule = C.instantiate(exp.data)
    if _rank() == 0:
        _preflight_data(datamodule, exp, args.stages)
    if exp.seed is not None:
        seed_everything(exp.seed)  # before the model is built: its initial weights
    model = C.instantiate(exp.model)
    if exp.lr_scheduler is not None:
        attach_lr_scheduler(model, exp.lr_scheduler, exp.lr_scheduler_options)
    callbacks = [C.instantiate(c) for c in exp.callbacks]

    header = "\n".join([
        f"Resolved config of a run of {os.path.abspath(config_path)} (every argument, defaults included)",
        "command: " + shlex.join([sys.executable, os.path.abspath(__file__), *args.argv]),
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')} by msforge {msforge.__version__}, mindspore "
        f"{_mindspore_version()}; rerun with: python experiments/run.py <this file>",
        "A config file is code: its class_paths are imported and run.",
    ])
    writer = _config_writer(Callback, resolved, header)
    trainer = C.instantiate(C.Component("trainer", "msforge.Trainer", Trainer,
                                        {**trainer_kwargs, "callbacks": callbacks + [writer]}))
    ckpt = _check_checkpoint(trainer, model, args.ckpt, "fit" in args.stages) if args.ckpt is not None else None
    return Run(exp=exp, trainer=trainer, model=model, datamodule=datamodule, ckpt=ckpt, resolved=resolved,
               header=header, writer=writer, new_folders=_missing_folders(trainer), stage=None)


def _check_device(device_target):
    """A backend this MindSpore build can use here (the Trainer would only find out inside fit)."""
    if device_target in ("auto", "CPU"):
        return
    from mindspore import hal

    if not hal.is_available(device_target):
        found = [d for d in ("CPU", "GPU", "Ascend") if hal.is_available(d)]
        raise ConfigError(f"trainer.device_target={device_target!r}: not available to this MindSpore here (available: "
                          f"{', '.join(found) or 'none'}); use auto")


def _check_launch(config, args):
    """Data parallel needs one process per device, which msrun starts: --devices N does that for you."""
    trainer = config.get("trainer") or {}
    strategy, devices = trainer.get("strategy", "auto"), trainer.get("devices", 1)
    if args.devices > 1 or "MS_ROLE" in os.environ:  # re-launched under msrun, or one of its workers
        return
    for key, value, wanted in (("strategy", strategy, strategy == "data_parallel"),
                               ("devices", devices, isinstance(devices, int) and devices > 1)):
        if wanted:
            raise ConfigError(f"trainer.{key}={value!r}: data parallel needs one process per device, started by "
                              "msrun; add --devices N (this script starts msrun) or launch it with msrun")


def _missing_folders(trainer):
    """The folders of the run folder's path that do not exist yet (deepest first): what a refused run removes again
    if it got as far as creating them. An explicit ``trainer.version`` folder that exists already is not ours."""
    path = os.path.join(trainer.default_root_dir, trainer.name)
    if trainer.version is not None:
        path = os.path.join(path, str(trainer.version))
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def attach_lr_scheduler(model, component, options):
    """Make the config's ``lr_scheduler`` part of ``model.configure_optimizers()``: the scheduler class is built on
    the optimizer the model returns (as LightningCLI's ``lr_scheduler`` section does); ``options`` are the Trainer's
    (interval, frequency, monitor, ...). A model that returns a scheduler itself cannot take a second one."""
    from msforge.trainer import MisconfigurationError

    original = model.configure_optimizers

    def configure_optimizers():
        config = original()
        optimizer = config
        if isinstance(config, dict):
            if config.get("lr_scheduler") is not None:
                raise MisconfigurationError(f"{type(model).__name__}.configure_optimizers() returns a scheduler of "
                                            "its own; remove the config's lr_scheduler section or that scheduler")
            optimizer = config.get("optimizer")
        elif isinstance(config, (list, tuple)):
            raise MisconfigurationError(f"{type(model).__name__}.configure_optimizers() returns a list; the config's "
                                        "lr_scheduler needs it to return one optimizer")
        scheduler = C.instantiate(component, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **options}}

    object.__setattr__(model, "configure_optimizers", configure_optimizers)


def _mindspore_version():
    import mindspore

    return mindspore.__version__


def _config_writer(callback_base, resolved, header):
    class ConfigWriter(callback_base):
        """Writes the resolved config into the run folder (rank 0 only) when a stage starts: after the Trainer has
        read its checkpoint and built the optimizer, so a run refused up to there leaves no folder."""

        path = None

        def _write(self, trainer):
            if self.path is None and trainer.is_global_zero and not trainer.sanity_checking:
                self.path = C.dump_yaml(resolved, os.path.join(trainer.log_dir, "config.yaml"), header)

        def on_fit_start(self, trainer, module):
            self._write(trainer)

        def on_validation_start(self, trainer, module):
            self._write(trainer)

        def on_test_start(self, trainer, module):
            self._write(trainer)

        def on_predict_start(self, trainer, module):
            self._write(trainer)

    return ConfigWriter()


def _check_checkpoint(trainer, model, ckpt, resumes):
    """Resolve --ckpt (a path, last or best), read it and check it fits the model (and, to resume a fit, that it holds
    the training state): before anything is written."""
    from msforge import checkpoint as ckpt_io
    from msforge.trainer import MisconfigurationError

    try:
        path, params, state = trainer.read_checkpoint(ckpt)
        ckpt_io.check_match(path, params, ckpt_io.named_params(model))
        if resumes:
            trainer._check_resumable(path, params, state)
    except (MisconfigurationError, ckpt_io.CheckpointError) as err:
        raise ConfigError(f"--ckpt {ckpt}: {err}") from None
    return path


# the loader each stage runs on, the Trainer's limit for it, and the data init_args a user sets it with
STAGE_DATA = {"fit": ("train", "train_dataloader", ("train", "samples")),
              "validate": ("val", "val_dataloader", ("val",)),
              "test": ("test", "test_dataloader", ("test",)),
              "predict": ("predict", "predict_dataloader", ("predict", "test"))}


def _preflight_data(datamodule, exp, stages):
    """Run the data module's prepare_data and setup for every stage now, and ask each stage's loader for its batches,
    so a missing data folder or test file, or a test file of 0 videos, is a one-line error before anything is built or
    written (the Trainer calls them again; setup must be idempotent, as Lightning's is)."""
    from msforge.arguments import MisconfigurationError, limit_batches
    from msforge.data import loader_length

    where = f"data ({type(datamodule).__name__})"
    try:
        datamodule.prepare_data()
        for stage in dict.fromkeys(_stage_for_setup(s) for s in stages):
            datamodule.setup(stage)
        for stage in dict.fromkeys(s for s in stages if s in STAGE_DATA):
            kind, method, words = STAGE_DATA[stage]
            loader = getattr(datamodule, method)()
            if loader is None:
                if kind == "val":
                    continue  # no validation data: validate reports nothing, fit trains without validating
                raise ConfigError(f"{where}: {method}() returned None, so --stage {stage} has nothing to run on")
            total = loader_length(loader)
            limit_key = f"limit_{kind}_batches"
            limit = exp.trainer_kwargs.get(limit_key)
            if limit_batches(limit_key, limit, total) == 0:
                raise ConfigError(_empty_loader_message(exp, kind, words, loader, total, limit_key, limit))
    except ConfigError:
        raise
    except MisconfigurationError as err:
        raise ConfigError(f"trainer.{err}" if err.key else f"{where}: {err}") from None
    except Exception as err:
        if os.environ.get("MSFORGE_TRACEBACK"):
            raise
        key = next((k for k in exp.data.init_args if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", str(err))), None)
        at = f"data.init_args.{key}={exp.data.init_args[key]!r}: " if key else ""
        raise ConfigError(f"{at}{where}: {type(err).__name__}: {err}") from None


def _empty_loader_message(exp, kind, words, loader, total, limit_key, limit):
    """Which key makes a stage's loader empty: the Trainer's limit, else the data argument for that split."""
    samples = len(loader.dataset) if hasattr(loader, "dataset") and hasattr(loader.dataset, "__len__") else None
    what = f"the {kind} loader gives no batches" + (f" ({samples} samples)" if samples is not None else "")
    if limit is not None and total:
        return f"trainer.{limit_key}={limit!r}: leaves 0 of the {total} {kind} batches"
    given = exp.data.init_args
    keys = sorted((k for k in given if any(w in k for w in words)), key=lambda k: not isinstance(given[k], str))
    if keys:
        return f"data.init_args.{keys[0]}={given[keys[0]]!r}: {what}"
    return f"data ({exp.data.cls.__name__}): {what}"


# == stages ===========================================================================================================
def run_stages(run, stages):
    """Run the stages in order; returns the exit code."""
    trainer, model, datamodule = run.trainer, run.model, run.datamodule
    eval_ckpt, fitted = run.ckpt, False
    if stages[0] != "fit" and eval_ckpt is None:
        print("note: no --ckpt and no fit stage first: using the weights the model was built with", file=sys.stderr)
    for stage in stages:
        run.stage = stage
        if fitted:  # the first stage after fit says which checkpoint the evaluation stages use
            eval_ckpt, fitted = checkpoint_after_fit(trainer), False
        if stage == "fit":
            trainer.fit(model, datamodule=datamodule, ckpt_path=run.ckpt)  # SIGTERM/SIGINT: exits 128+signal
            if trainer.diverged:
                print(f"error: training stopped: {trainer.stop_reason}", file=sys.stderr, flush=True)
                return 1
            fitted = True
        elif stage == "validate":
            trainer.validate(model, datamodule=datamodule, ckpt_path=eval_ckpt)
        elif stage == "test":
            results = trainer.test(model, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False)
            if trainer.is_global_zero:
                report_test(trainer, model, datamodule, results, eval_ckpt)
        elif stage == "predict":
            outputs = trainer.predict(model, datamodule=datamodule, ckpt_path=eval_ckpt)
            if trainer.is_global_zero:
                save_predictions(outputs, os.path.join(trainer.log_dir, "predictions.npy"))
        elif stage == "export":
            if trainer.is_global_zero:
                if eval_ckpt is not None:
                    load_weights(model, eval_ckpt)
                example = example_input(model, datamodule)
                path, diff = export_mindir(model, example, os.path.join(trainer.log_dir, "model"))
                print(f"exported MindIR: {path} (reloaded output matches within {diff:.2g})")
    if trainer.is_global_zero and run.writer.path is None:  # export only: no Trainer stage wrote it
        run.writer.path = C.dump_yaml(run.resolved, os.path.join(trainer.log_dir, "config.yaml"), run.header)
    if trainer.is_global_zero:
        print(f"run folder: {trainer.log_dir}")
    return 0


def nothing_done_yet(run):
    """Whether the run has produced nothing worth keeping: no training step and no checkpoint written by it, so a
    failure now is a refused input (exit code 2, run folder removed) rather than a failed run."""
    step = getattr(run.trainer, "train_step", None)
    if step is not None and getattr(step, "has_run", False):
        return False
    log_dir = run.trainer._log_dir
    return log_dir is None or not any(f.endswith(".ckpt") for _, _, files in os.walk(log_dir) for f in files)


def remove_refused_run(run):
    """A refused run leaves nothing: remove the run folder and the folders above it that this process created."""
    trainer = run.trainer
    if not trainer.is_global_zero:
        return
    if trainer._log_dir is not None and (trainer.version is None or trainer._log_dir in run.new_folders):
        shutil.rmtree(trainer._log_dir, ignore_errors=True)
    for folder in run.new_folders:  # deepest first; only if empty (another run may have started there meanwhile)
        try:
            os.rmdir(folder)
        except OSError:
            pass


def late_error_message(run, stage, err):
    """One line for an error raised while a stage ran, naming the config key when the message names one of the
    arguments the config gave (``learning rate`` counts as ``lr``)."""
    text = str(err) if isinstance(err, (ConfigError, ValueError)) and "\n" not in str(err).strip() else \
        next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    if isinstance(err, ConfigError):
        return text
    from msforge.arguments import MisconfigurationError

    exp = run.exp
    sections = [("model", exp.model), ("data", exp.data), ("lr_scheduler", exp.lr_scheduler)] + \
        [(f"callbacks.{i}", c) for i, c in enumerate(exp.callbacks)]
    if isinstance(err, MisconfigurationError) and err.key is None:
        sections = []  # the Trainer's own diagnosis (of training_step, say): a word like "loss" in it names no key
    words = {"learning rate": "lr", "learning_rate": "lr"}
    for section, comp in sections:
        for key, value in (comp.init_args.items() if comp is not None else ()):
            names = [key] + [w for w, k in words.items() if k == key]
            if any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text) for n in names):
                return f"{section}.init_args.{key}={value!r}: {stage} failed: {type(err).__name__}: {text}"
    for key, value in (exp.trainer_kwargs.items() if sections else ()):
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", text):
            return f"trainer.{key}={value!r}: {stage} failed: {type(err).__name__}: {text}"

    report = glob.glob(os.path.join(os.environ.get("MS_OM_PATH", os.curdir), "rank_*", "om", "analyze_fail.ir"))
    notes = [f"MindSpore's report: {report[0]}"] if report else []
    if "MSFORGE_TRACEBACK" not in text:
        notes.append("MSFORGE_TRACEBACK=1 shows the traceback")
    kind = "" if isinstance(err, MisconfigurationError) else f"{type(err).__name__}: "
    return (f"{stage} failed before any training step (a model.init_args value the model cannot run with?): "
            f"{kind}{text}" + (f" ({'; '.join(notes)})" if notes else ""))


def checkpoint_after_fit(trainer):
    """The checkpoint later stages use: the best one (when ModelCheckpoint monitors a metric), else the last one,
    else None (the weights in memory)."""
    cb = trainer.checkpoint_callback
    if cb is None:
        return None
    best, last = getattr(cb, "best_model_path", "") or "", getattr(cb, "last_model_path", "") or ""
    choices = [("best", best), ("last", last)] if getattr(cb, "monitor", None) else [("last", last), ("latest", best)]
    for kind, path in choices:
        if path:
            if trainer.is_global_zero:
                print(f"using the {kind} checkpoint: {path}")
            return path
    return None


def load_weights(model, path):
    from msforge import checkpoint as ckpt_io

    params, _ = ckpt_io.load(path)
    targets = ckpt_io.named_params(model)
    ckpt_io.check_match(path, params, targets)
    ckpt_io.assign(targets, params)


# -- test report -------------------------------------------------------------------------------------------------------
def _numpy(x):
    return x.asnumpy() if hasattr(x, "asnumpy") else x


def iterate_batches(loader, limit=None):
    """Batches of any loader (msforge DataLoader, mindspore Dataset, iterable) as tuples of numpy arrays."""
    import numpy as np

    if hasattr(loader, "create_tuple_iterator"):
        source = loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    else:
        source = iter(loader)
    for i, batch in enumerate(source):
        if limit is not None and i >= limit:
            return
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        yield tuple(np.asarray(_numpy(x)) for x in batch)


def is_video_batch(batch):
    """(inputs, targets) of shapes (B, T_in, C, H, W) and (B, T_out, C, H, W)."""
    return (len(batch) >= 2 and batch[0].ndim == 5 and batch[1].ndim == 5 and batch[0].shape[0] == batch[1].shape[0]
            and batch[0].shape[2:] == batch[1].shape[2:])


def video_baselines(loader, limit=None):
    """Metrics of two trivial forecasts over the test batches: all-black frames and the last input frame repeated.

    Returns ``({"all-black": metrics, "copy-last": metrics}, sequences, note)``; the dicts are empty (and ``note``
    says why) when the batches are not (inputs, targets) videos. Means are weighted by frames, like the Trainer's.
    """
    import numpy as np
    from msforge import metrics

    sums = {"all-black": {}, "copy-last": {}}
    frames = sequences = 0
    for batch in iterate_batches(loader, limit):
        if not is_video_batch(batch):
            return {}, 0, (f"baselines skipped: test batches are not (inputs, targets) videos of shape (B, T, C, H, W) "
                           f"(got shapes {[b.shape for b in batch]})")
        inputs, targets = batch[0], batch[1]
        n = targets.shape[0] * targets.shape[1]
        forecasts = {"all-black": np.zeros_like(targets),
                     "copy-last": np.repeat(inputs[:, -1:], targets.shape[1], axis=1)}
        for name, pred in forecasts.items():
            for key, value in metrics.video_metrics(pred, targets).items():
                sums[name][key] = sums[name].get(key, 0.0) + value * n
        frames += n
        sequences += targets.shape[0]
    if frames == 0:
        return {}, 0, "baselines skipped: the test loader gave no batches"
    return {name: {k: v / frames for k, v in s.items()} for name, s in sums.items()}, sequences, None


def _test_limit(trainer, loader):
    """How many test batches the Trainer ran (limit_test_batches: None, an int, or a fraction)."""
    limit = getattr(trainer, "limits", {}).get("test")
    try:
        total = len(loader)
    except TypeError:
        total = None
    if limit is None:
        return total
    if isinstance(limit, float):
        return int(total * limit) if total is not None else None
    return limit if total is None else min(limit, total)


def format_table(model_metrics, baselines, prefix="test_"):
    """Rows: each model metric, with the baselines' value of the same metric (name without ``prefix``) beside it."""
    columns = ["metric", "model", *baselines]
    rows = []
    for name in sorted(model_metrics):
        short = name[len(prefix):] if name.startswith(prefix) else name
        rows.append([name, _fmt(model_metrics[name]), *(_fmt(b.get(short)) for b in baselines.values())])
    widths = [max(len(r[i]) for r in [columns] + rows) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [columns] + rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _fmt(value):
    return "-" if value is None else f"{value:.6g}"


def report_test(trainer, model, datamodule, results, ckpt):
    """Print the test table (model and baselines), write test_metrics.json and the prediction PNG."""
    model_metrics = {k: v for r in results for k, v in r.items()}
    baselines, sequences, note = {}, 0, None
    png, png_note = None, None
    try:
        loader = datamodule.test_dataloader()
        limit = _test_limit(trainer, loader)
        baselines, sequences, note = video_baselines(loader, limit)
        png, png_note = prediction_png(model, datamodule.test_dataloader(),
                                       os.path.join(trainer.log_dir, "test_predictions.png"))
    except Exception as err:  # the metrics are in; a report extra must not turn the run into a failure
        note = f"baselines / PNG skipped: {type(err).__name__}: {C.one_line(err)}"
    where = os.path.basename(ckpt) if ckpt else "weights in memory"
    size = f", {sequences} sequences" if sequences else ""
    print(f"\nTest metrics ({where}{size})")
    print(format_table(model_metrics, baselines))
    for line in (note, png_note):
        if line:
            print(line)
    if png:
        print(f"predictions: {png}")
    path = os.path.join(trainer.log_dir, "test_metrics.json")
    # relative to the run folder, so the file stays true when the folder is moved or copied (docs/ holds some)
    where = os.path.relpath(ckpt, trainer.log_dir) if ckpt else None
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"checkpoint": where, "model": model_metrics, "baselines": baselines, "sequences": sequences}, f,
                  indent=2)


# -- PNG ---------------------------------------------------------------------------------------------------------------
def predict_batch(model, batch):
    """``model.predict_step`` on one numpy batch, as numpy."""
    import numpy as np
    from mindspore import Tensor

    model.set_train(False)
    out = model.predict_step(tuple(Tensor(x) for x in batch), 0)
    return np.asarray(_numpy(out))


def prediction_png(model, loader, path, sequences=PNG_SEQUENCES):
    """PNG of the first test sequences (video batches only); returns ``(path, None)`` or ``(None, note)``."""
    batch = next(iterate_batches(loader, 1), None)
    if batch is None or not is_video_batch(batch):
        return None, "PNG skipped: test batches are not (inputs, targets) videos of shape (B, T, C, H, W)"
    pred = predict_batch(model, batch)
    if pred.shape != batch[1].shape:
        return None, f"PNG skipped: predict_step gave shape {pred.shape}, targets are {batch[1].shape}"
    return save_video_png(path, batch[0], batch[1], pred, sequences), None


def save_video_png(path, inputs, targets, predictions, sequences=PNG_SEQUENCES, pad=2):
    """Rows input / target / prediction for each of the first ``sequences`` videos; arrays (B, T, C, H, W) in [0, 1]
    (C = 3 in colour, otherwise the first channel in grey). One image, so it stays fast for long videos."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = min(sequences, len(inputs))
    rows = [(f"#{i} {label}", np.asarray(video[i], dtype=np.float32)) for i in range(n)
            for label, video in (("input", inputs), ("target", targets), ("prediction", predictions))]
    cols = max(len(v) for _, v in rows)
    _, c, h, w = rows[0][1].shape
    colour = c == 3
    grid = np.ones((len(rows) * (h + pad) - pad, cols * (w + pad) - pad) + ((3,) if colour else ()), np.float32)
    for r, (_, video) in enumerate(rows):
        for k, frame in enumerate(video):
            frame = np.clip(np.nan_to_num(frame), 0, 1)
            frame = frame.transpose(1, 2, 0) if colour else frame[0]
            grid[r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = frame
    dpi, margin = 100, 110
    fig = plt.figure(figsize=((grid.shape[1] + margin) / dpi, (grid.shape[0] + 30) / dpi), dpi=dpi)
    ax = fig.add_axes([margin / (grid.shape[1] + margin), 0, grid.shape[1] / (grid.shape[1] + margin),
                       grid.shape[0] / (grid.shape[0] + 30)])
    ax.imshow(grid, cmap=None if colour else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(rows))], [label for label, _ in rows], fontsize=8)
    ax.set_xticks([k * (w + pad) + w / 2 for k in range(cols)], [str(k + 1) for k in range(cols)], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# -- predict / export --------------------------------------------------------------------------------------------------
def save_predictions(outputs, path):
    import numpy as np

    arrays = [np.asarray(_numpy(o)) for o in outputs if o is not None]
    if not arrays:
        print("predict: predict_step returned nothing to save")
        return None
    try:
        np.save(path, np.concatenate(arrays))
    except ValueError as err:
        print(f"predict: outputs not saved, they cannot be stacked ({C.one_line(err)})")
        return None
    print(f"predictions: {path}")
    return path


def example_input(model, datamodule):
    """One example input: ``model.example_input_array`` if set, else the first sample of the first test batch."""
    import numpy as np

    example = getattr(model, "example_input_array", None)
    if example is not None:
        return np.asarray(_numpy(example))
    batch = next(iterate_batches(datamodule.test_dataloader(), 1), None)
    if batch is None:
        raise ConfigError("export: the test loader gave no batch to take an example input from")
    return batch[0][:1]


def export_mindir(model, example, file_stem, tolerance=EXPORT_TOLERANCE):
    """``mindspore.export`` to ``<file_stem>.mindir``, reload with ``mindspore.load`` + ``nn.GraphCell`` and compare the
    outputs on ``example``; returns ``(path, max abs difference)``; raises RuntimeError past ``tolerance``."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    model.set_train(False)
    x = Tensor(np.asarray(example, dtype=np.float32))
    ms.export(model, x, file_name=file_stem, file_format="MINDIR")
    path = file_stem + ".mindir"
    reloaded = nn.GraphCell(ms.load(path))
    expected, got = _outputs(model(x)), _outputs(reloaded(x))
    if len(expected) != len(got) or any(a.shape != b.shape for a, b in zip(expected, got)):
        raise RuntimeError(f"export: the reloaded MindIR {path} gives outputs of shapes {[g.shape for g in got]}, the "
                           f"model {[e.shape for e in expected]}")
    diff = max((float(np.max(np.abs(a - b))) if a.size else 0.0) for a, b in zip(expected, got))
    if not diff <= tolerance:
        raise RuntimeError(f"export: the reloaded MindIR {path} differs from the model by {diff:.3g} "
                           f"(> {tolerance:g})")
    return path, diff


def _outputs(out):
    import numpy as np

    items = out if isinstance(out, (tuple, list)) else (out,)
    return [np.asarray(_numpy(o), dtype=np.float64) for o in items]


# == --help with a CONFIG ============================================================================================
def config_help(config_path, config):
    """The arguments of the classes ``config`` names (after overrides), one line each under a heading per section:
    the key to set, its type, its default and the config's value. Imports the classes, builds nothing."""
    config = C.check_structure(config, required=("model", "data"))
    import msforge  # noqa: F401  (first: caps oneDNN's ISA before MindSpore loads)
    from msforge import Trainer

    sections = [("trainer", "trainer", "msforge.Trainer", Trainer, config["trainer"], ("callbacks",))]
    for key in ("model", "data"):
        spec = config[key]
        cls = C.import_class(spec["class_path"], key, DEFAULT_PACKAGES[key])
        sections.append((key, f"{key}.init_args", spec["class_path"], cls, spec["init_args"], ()))
    names = [C._short_name(spec) for spec in config["callbacks"]]
    for i, spec in enumerate(config["callbacks"]):
        cls = C.import_class(spec["class_path"], f"callbacks.{i}", DEFAULT_PACKAGES["callbacks"])
        ref = names[i] if names.count(names[i]) == 1 else str(i)  # the spelling apply_overrides takes
        sections.append((f"callbacks.{i}", f"callbacks.{ref}.init_args", spec["class_path"], cls, spec["init_args"],
                         ()))
    if config.get("lr_scheduler") is not None:
        spec = config["lr_scheduler"]
        cls = C.import_class(spec["class_path"], "lr_scheduler", DEFAULT_PACKAGES["lr_scheduler"])
        sections.append(("lr_scheduler", "lr_scheduler.init_args", spec["class_path"], cls, spec["init_args"],
                         ("optimizer",)))
    described = [(title, prefix, path, *C.describe_arguments(cls, given, exclude))
                 for title, prefix, path, cls, given, exclude in sections]
    lines = [f"\nArguments of the classes in {config_path}",
             "(set them in the file or as key=value, values in YAML; config: the value the file and overrides give):"]
    for title, prefix, path, rows, var_kw in described:
        width = max([len(f"{prefix}.{row[0]}") for row in rows] + [len(prefix) + 2])
        lines.append(f"\n{title}: {path}")
        for name, type_text, default, value in rows:
            given = f"; config: {value}" if value is not None else ""
            lines.append(f"  {prefix + '.' + name:<{width}}  (type: {type_text}, default: {default}{given})")
        if var_kw:
            lines.append(f"  {prefix + '.*':<{width}}  (any other key goes to the constructor's **kwargs, which "
                         "checks it)")
    return "\n".join(lines) + "\n"


# == main =============================================================================================================
def _fail(err, code=2):
    print(f"error: {C.one_line(err)}", file=sys.stderr, flush=True)
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        config_path = C.find_config(args.config, [os.getcwd(), HERE])
        config = C.apply_overrides(C.load_yaml(config_path), args.overrides)
        if args.help:
            text = build_parser().format_help() + config_help(config_path, config)
            print(text, end="")
            return 0
        # every check that needs no class, before MindSpore is imported (a fraction of a second)
        C.check_early(config, required=("model", "data"), trainer_check=_early_arguments().check_trainer_arguments,
                      default_name=_default_name(config_path))
        if args.devices > 1:
            config = C.apply_overrides(config, ["trainer.strategy=data_parallel"])
        if args.print_config:  # the classes are imported and checked, nothing is built or written
            exp, trainer_cls = check_config(config_path, config)
            print(C.dumps(resolve(exp, trainer_cls, config_path)[1]), end="")
            return 0
        _check_launch(config, args)
        run = prepare(config_path, config, args)
        if args.devices > 1:
            msrun = shutil.which("msrun")
            if msrun is None:
                raise ConfigError("--devices needs MindSpore's msrun launcher on PATH")
            # worker logs beside the runs of this experiment (msrun creates the folder)
            log_dir = os.path.join(run.trainer.default_root_dir, run.trainer.name, "msrun_logs",
                                   time.strftime("%Y%m%d-%H%M%S"))
            command = msrun_command(args.devices, config_path, args.overrides, args.stages, args.ckpt,
                                    log_dir=log_dir, msrun=msrun)
    except ConfigError as err:
        return _fail(err)
    if args.dry_run:
        print(C.dumps(run.resolved), end="")
        if args.devices > 1:
            print("msrun command: " + shlex.join(command))
        return 0
    if args.devices > 1:
        print(f"launching {args.devices} workers (logs in {log_dir}): " + shlex.join(command), flush=True)
        sys.stderr.flush()
        os.execv(command[0], command)  # msrun takes this process's place (signals reach it directly)
    from msforge.checkpoint import CheckpointError
    from msforge.trainer import MisconfigurationError

    try:
        return run_stages(run, args.stages)
    except CheckpointError as err:  # e.g. the disk filled up while saving: earlier checkpoints are intact
        return _fail(err, code=1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT.value
    except Exception as err:
        # refused: the input fails before the run has done anything (a constructor or MindSpore rejecting a value
        # at the first step); a run that trained and then crashed keeps its folder and its traceback
        refused = nothing_done_yet(run)
        if refused:
            remove_refused_run(run)
        if os.environ.get("MSFORGE_TRACEBACK") or not (refused or isinstance(err, (ConfigError,
                                                                                     MisconfigurationError))):
            raise
        return _fail(late_error_message(run, run.stage, err))


def quiet_mindspore(environ=os.environ):
    """Before MindSpore is imported: its log shows errors only (GLOG_v=3; its warnings are noise here, set GLOG_v=2 to
    see them), and the report it writes when a graph fails to compile goes to a temporary folder (MS_OM_PATH) instead
    of ``rank_0/om/`` in the current folder, which a refused run must leave untouched. Settings made by the user win."""
    environ.setdefault("GLOG_v", "3")
    environ.setdefault("MS_OM_PATH", os.path.join(tempfile.gettempdir(), f"msforge-mindspore-{os.getpid()}"))


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {C.one_line(message)}\n"


if __name__ == "__main__":
    quiet_mindspore()
    warnings.formatwarning = _one_line_warning  # a CLI's warnings are for its user, not the code's lines
    # the script's own folder would shadow user modules named like ours (config); the current folder instead lets
    # class_paths name modules there
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == HERE:
        sys.path.pop(0)
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    sys.exit(main())
