"""Every bad input is refused before the run folder exists (issue 18): each case is a real ``python experiments/run.py``
process that must exit with code 2, print exactly one line on stderr (``error: ...`` naming the config key), print
nothing on stdout, and leave its working folder (where the run folder would go) untouched.

Most cases are the main job's config (experiments/convlstm_mnist.yaml, shrunk); a few need a model that only
MindSpore can reject, or a checkpoint, and use a tiny model written next to the configs. The processes run in
parallel; nearly all stop before anything is built."""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")
MAIN_YAML = os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")

TINY_MODULE = '''
"""A tiny model whose out_frames=3 passes every check and is only rejected by MindSpore compiling the loss."""
import numpy as np
from mindspore import nn, ops

from msforge import DataLoader, DataModule, Module


class Frames(Module):
    def __init__(self, lr=0.1, out_frames=2):
        super().__init__()
        self.save_hyperparameters()
        self.out_frames = out_frames
        self.conv = nn.Conv2d(1, 1, 1, has_bias=True)

    def construct(self, x):
        return ops.stack([self.conv(x[:, -1])] * self.out_frames, 1)

    def training_step(self, batch):
        x, y = batch
        return ((self.construct(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", float(((self(x).asnumpy() - y.asnumpy()) ** 2).mean()))

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=self.hparams.lr)


class Clips:
    def __init__(self, n):
        rng = np.random.default_rng(n)
        self.x = rng.random((n, 3, 1, 8, 8), dtype=np.float32)
        self.y = rng.random((n, 2, 1, 8, 8), dtype=np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class ClipData(DataModule):
    def __init__(self, batch_size=4):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(Clips(8), self.batch_size)

    def val_dataloader(self):
        return DataLoader(Clips(4), self.batch_size)
'''

TINY_YAML = """\
trainer: {max_epochs: 1, default_root_dir: runs, enable_progress_bar: false, num_sanity_val_steps: 0}
model: {class_path: bad_input_tiny.Frames}
data: {class_path: bad_input_tiny.ClipData}
"""

ALIAS_BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}' if b else '1'] * 9)}]\n"
                     for a, b in zip("abcdefghi", [None, *"abcdefgh"]))  # 9**9 values once expanded


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The configs and files the cases name (by absolute path), in a folder of their own."""
    folder = tmp_path_factory.mktemp("inputs")
    main = yaml.safe_load(open(MAIN_YAML))
    main["trainer"].update(default_root_dir="runs", enable_progress_bar=False)
    main["data"]["init_args"].update(samples_per_epoch=8, val_size=4, test_size=4, batch_size=4)
    main["model"]["init_args"].update(hidden=[8, 8])
    (folder / "main.yaml").write_text(yaml.safe_dump(main, sort_keys=False))
    text = (folder / "main.yaml").read_text()
    (folder / "duplicate.yaml").write_text(text.replace("trainer:\n", "trainer:\n  max_epochs: 4\n", 1))
    bombs = ALIAS_BOMB.replace("\n", "\n  ").rstrip() + "\n"
    bomb_scalar = text.replace("trainer:\n", f"bombs:\n  {bombs}trainer:\n", 1)
    (folder / "bomb_scalar.yaml").write_text(bomb_scalar.replace("  max_epochs: 1\n", "  max_epochs: *i\n", 1))
    with_boom = text.replace("  init_args:\n", "  init_args:\n    boom: *i\n", 1)  # the model's first argument
    (folder / "bomb_arg.yaml").write_text(ALIAS_BOMB + with_boom)
    (folder / "recursive.yaml").write_text(text.replace("  init_args:\n", "  init_args:\n    loop: &r [*r]\n", 1))
    np.save(folder / "empty_test.npy", np.zeros((20, 0, 64, 64), np.uint8))  # mnist_test_seq.npy's layout, 0 videos
    (folder / "a_file").write_text("not a folder\n")
    (folder / "bad_input_tiny.py").write_text(TINY_MODULE)
    (folder / "no_mindspore" / "mindspore").mkdir(parents=True)  # put first on the path of the cases checked early
    (folder / "no_mindspore" / "mindspore" / "__init__.py").write_text(
        'raise ImportError("MindSpore was imported by a check that needs no class")\n')
    (folder / "tiny.yaml").write_text(TINY_YAML)
    return folder


def plain_checkpoint(inputs):
    """The tiny model's weights saved by MindSpore itself: no training state to resume from."""
    import mindspore as ms

    sys.path.insert(0, str(inputs))
    try:
        import bad_input_tiny
    finally:
        sys.path.remove(str(inputs))
    path = inputs / "plain.ckpt"
    ms.save_checkpoint(bad_input_tiny.Frames(), str(path))
    return path


# refused before MindSpore is imported (the others need a class, a data loader or a checkpoint)
EARLY = {"max_epochs negative", "max_epochs zero", "val_check_interval zero", "lr nan", "lr inf", "StepLR step_size 0",
         "root under a regular file", "alias bomb as a scalar", "alias bomb as a model argument", "recursive alias",
         "duplicate key", "name is a path", "trainer.name is a path", "max_steps zero", "val_check_interval above 1",
         "check_val_every_n_epoch zero", "limit_train_batches zero", "gradient_clip_val inf", "max_time zero",
         "seed negative", "lr zero", "weight_decay negative", "batch_size zero", "nan anywhere", "no config",
         "root not writable", "scheduler frequency zero", "data parallel without msrun"}


def cases(inputs):
    """name -> (command-line arguments, text the one error line must hold: the key and its value)."""
    main, tiny = str(inputs / "main.yaml"), str(inputs / "tiny.yaml")
    step_lr_0 = "lr_scheduler={class_path: StepLR, init_args: {step_size: 0}}"
    found = {
        # the rows of issue 18
        "max_epochs negative": ([main, "trainer.max_epochs=-5"], "trainer.max_epochs=-5"),
        "max_epochs zero": ([main, "trainer.max_epochs=0"], "trainer.max_epochs=0"),
        "val_check_interval zero": ([main, "trainer.val_check_interval=0"], "trainer.val_check_interval=0"),
        "lr nan": ([main, "model.init_args.lr=.nan"], "model.init_args.lr=nan"),
        "lr inf": ([main, "model.init_args.lr=.inf"], "model.init_args.lr=inf"),
        "StepLR step_size 0": ([main, step_lr_0], "lr_scheduler.init_args.step_size=0"),
        "test file of 0 videos": ([main, f"data.init_args.test_file={inputs / 'empty_test.npy'}"],
                                  "data.init_args.test_file="),
        "root under a regular file": ([main, f"trainer.default_root_dir={inputs / 'a_file' / 'runs'}"],
                                      "trainer.default_root_dir="),
        "weights-only checkpoint for fit": ([tiny, "--stage", "fit", "--ckpt", str(inputs / "plain.ckpt")], "--ckpt"),
        "hidden not numbers": ([main, "model.init_args.hidden=abc"], "model.init_args.hidden='abc'"),
        "alias bomb as a scalar": ([str(inputs / "bomb_scalar.yaml")], "trainer.max_epochs"),
        "alias bomb as a model argument": ([str(inputs / "bomb_arg.yaml")], "model.init_args.boom"),
        # more: every key the job reads, asked what a bad value does
        "recursive alias": ([str(inputs / "recursive.yaml")], "model.init_args.loop"),
        "duplicate key": ([str(inputs / "duplicate.yaml")], "duplicate key trainer.max_epochs"),
        "name is a path": ([main, "name=../elsewhere"], "name='../elsewhere'"),
        "trainer.name is a path": ([main, "trainer.name=a/b"], "trainer.name='a/b'"),
        "max_steps zero": ([main, "trainer.max_steps=0"], "trainer.max_steps=0"),
        "val_check_interval above 1": ([main, "trainer.val_check_interval=1.5"], "trainer.val_check_interval=1.5"),
        "check_val_every_n_epoch zero": ([main, "trainer.check_val_every_n_epoch=0"],
                                         "trainer.check_val_every_n_epoch=0"),
        "limit_train_batches zero": ([main, "trainer.limit_train_batches=0"], "trainer.limit_train_batches=0"),
        "limit_test_batches zero before a test": ([main, "trainer.limit_test_batches=0"],
                                                  "trainer.limit_test_batches=0"),
        "gradient_clip_val inf": ([main, "trainer.gradient_clip_val=.inf"], "trainer.gradient_clip_val=inf"),
        "max_time zero": ([main, "trainer.max_time=0"], "trainer.max_time=0"),
        "seed negative": ([main, "seed=-1"], "seed=-1"),
        "lr zero": ([main, "model.init_args.lr=0"], "model.init_args.lr=0"),
        "weight_decay negative": ([main, "model.init_args.weight_decay=-0.1"], "model.init_args.weight_decay=-0.1"),
        "batch_size zero": ([main, "data.init_args.batch_size=0"], "data.init_args.batch_size=0"),
        "patience zero": ([main, "callbacks.EarlyStopping.init_args.patience=0"], "callbacks.1.init_args.patience=0"),
        "nan anywhere": ([main, "callbacks.EarlyStopping.init_args.min_delta=.nan"],
                         "callbacks.1.init_args.min_delta=nan"),
        "rejected only by MindSpore at the first step": ([tiny, "model.init_args.out_frames=3", "--stage", "fit"],
                                                          "model.init_args"),
        "no config": ([], "CONFIG"),
        "scheduler frequency zero": ([main, "lr_scheduler={class_path: StepLR, init_args: {step_size: 1}, "
                                            "frequency: 0}"], "lr_scheduler.frequency=0"),
        "data parallel without msrun": ([main, "trainer.strategy=data_parallel"], "trainer.strategy='data_parallel'"),
        "OneCycleLR total_steps a word": ([main, "lr_scheduler.init_args.total_steps=forever"],
                                          "lr_scheduler.init_args.total_steps='forever'"),
        "OneCycleLR over max_time without max_time": ([main, "lr_scheduler.init_args.total_steps=max_time"],
                                                      "lr_scheduler.init_args.total_steps='max_time'"),
        "a data folder that does not exist": ([main, f"data.init_args.mnist_dir={inputs / 'no_such_folder'}"],
                                              "data.init_args.mnist_dir="),
    }
    from mindspore import hal

    if not hal.is_available("GPU"):
        found["a device this MindSpore cannot use"] = ([main, "trainer.device_target=GPU"],
                                                       "trainer.device_target='GPU'")
    if os.geteuid() != 0:  # root may write into any folder
        found["root not writable"] = ([main, f"trainer.default_root_dir={inputs / 'read_only' / 'runs'}"],
                                      "trainer.default_root_dir=")
    return found


def _env(inputs, early=False):
    path = [str(inputs / "no_mindspore")] if early else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path + [str(inputs), ROOT]), PYTHONDONTWRITEBYTECODE="1")
    env.pop("MSFORGE_TRACEBACK", None)
    return env


def run_case(folder, args, inputs, early=False):
    """``run.py args`` in an empty folder of its own (``early``: with MindSpore's import made to fail); returns
    (result, seconds, the folder's entries afterwards)."""
    folder.mkdir()
    start = time.monotonic()
    result = subprocess.run([sys.executable, RUN, *args], cwd=folder, env=_env(inputs, early), capture_output=True,
                            text=True, timeout=300)
    return result, time.monotonic() - start, sorted(os.listdir(folder))


def fit_then_resume_with_a_new_lr(folder, inputs):
    """A tiny fit, then a resume of it with another learning rate: (first result, second result, run folders)."""
    folder.mkdir()
    tiny = str(inputs / "tiny.yaml")
    first = subprocess.run([sys.executable, RUN, tiny, "--stage", "fit"], cwd=folder, env=_env(inputs),
                           capture_output=True, text=True, timeout=300)
    again = subprocess.run([sys.executable, RUN, tiny, "trainer.max_epochs=2", "model.init_args.lr=0.05", "--stage",
                            "fit", "--ckpt", "last"], cwd=folder, env=_env(inputs), capture_output=True, text=True,
                           timeout=300)
    runs = folder / "runs" / "tiny"
    return first, again, sorted(os.listdir(runs)) if runs.is_dir() else []


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory):
    """Every case, and the resume of test_resuming_..., run side by side (mostly imports, partly disk waits)."""
    plain_checkpoint(inputs)
    if os.geteuid() != 0:
        (inputs / "read_only").mkdir()
        os.chmod(inputs / "read_only", 0o555)
    work = tmp_path_factory.mktemp("cases")
    found = cases(inputs)
    with ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:
        resume = pool.submit(fit_then_resume_with_a_new_lr, work / "resume", inputs)
        futures = {name: pool.submit(run_case, work / f"case{i}", args, inputs, name in EARLY)
                   for i, (name, (args, _)) in enumerate(found.items())}
        futures["blocked"] = pool.submit(run_case, work / "blocked", [str(inputs / "main.yaml"), "--dry-run"], inputs,
                                         True)
        cases_run = {name: (*f.result(), found.get(name, (None, None))[1]) for name, f in futures.items()}
        cases_run["resume"] = resume.result()
        return cases_run


def test_every_bad_input_is_one_error_line_naming_the_key_exit_code_2_and_no_run_folder(results):
    failures = []
    for name, (result, _, left, expected) in ((n, r) for n, r in results.items() if n not in ("resume", "blocked")):
        lines = result.stderr.splitlines()
        problems = []
        if result.returncode != 2:
            problems.append(f"exit code {result.returncode}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"{len(lines)} stderr lines")
        elif expected not in lines[0]:
            problems.append(f"{expected!r} not named")
        if result.stdout:
            problems.append("stdout not empty")
        if left:
            problems.append(f"left {left}")
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {result.stderr[-1500:]}")
    assert not failures, "\n".join(failures)


def test_an_alias_bomb_is_refused_at_once(results):
    for name in ("alias bomb as a scalar", "alias bomb as a model argument", "recursive alias"):
        result, seconds, _, _ = results[name]
        assert seconds < 10, f"{name}: {seconds:.1f} s"  # a process start; expanding it would take minutes
        assert "alias" in result.stderr, result.stderr


def test_checks_that_need_no_class_answer_before_mindspore_is_imported(results):
    """The EARLY cases passed with an importable ``mindspore`` that raises, so they never import it (~2 s saved per
    mistake); the same stand-in does stop a run that gets further."""
    result = results["blocked"][0]
    assert result.returncode != 0 and "MindSpore was imported by a check that needs no class" in result.stderr


def test_messages_say_what_to_do(results):
    """Spot checks of the wording: the allowed values and where a value came from."""
    def line(name):
        return results[name][0].stderr.strip()

    assert "0 trains nothing" in line("max_epochs zero")
    assert "a float fraction of the epoch in (0, 1]" in line("val_check_interval above 1")
    assert "must be a finite number > 0" in line("lr inf")
    assert "the test loader gives no batches (0 samples)" in line("test file of 0 videos")
    assert f"{os.sep}a_file is a file, not a folder" in line("root under a regular file")
    assert "holds weights only" in line("weights-only checkpoint for fit")
    assert "duplicate.yaml:" in line("duplicate key") and "first given at line 4" in line("duplicate key")
    assert "usage: experiments/run.py CONFIG.yaml" in line("no config")
    late = line("rejected only by MindSpore at the first step")
    assert "fit failed before any training step" in late
    assert "analyze_fail.ir" in late  # MindSpore's report, kept out of the current folder


def test_resuming_with_a_changed_hyper_parameter_warns_and_names_it(results):
    first, again, runs = results["resume"]
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    warning = [ln for ln in again.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warning) == 1 and "hyper-parameters that differ from the checkpoint's: lr 0.1 -> 0.05" in warning[0]
    assert runs == ["version_0", "version_1"]
