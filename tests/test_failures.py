"""The failure suite: faults a long training job meets, each tried for real, none losing data.

- SIGKILL five times in a row at random steps, each process resuming the previous one's ``last.ckpt``: the final
  weights and optimizer state equal the uninterrupted run's bit for bit (real processes: ``tests/toy.py``).
- The disk fills up while a checkpoint is written (``RLIMIT_FSIZE`` in a subprocess, ``tests/fail_disk_full.py``):
  one clear error line, the earlier checkpoints intact, no half-written or temporary file left, and the run resumes
  from the last good checkpoint to the same final weights.
- A loss or weights that turn NaN/inf: the run stops with the reason and the last good checkpoint is kept, never
  overwritten; EarlyStopping(check_finite=True) on a NaN val_loss keeps the best file; with dynamic loss scaling the
  overflowed steps are skipped and counted instead; under data parallel (msrun, 2 workers) a NaN on one rank stops
  every rank at the same step, never a hang.
- Checkpoints never unpickle anything: loading and resuming work with pickle disabled, and no source file can.

Kills and faults of the other suites: test_resume.py (SIGKILL chain, SIGTERM), test_checkpoint.py (kill inside a save,
corrupt and foreign files), test_distributed.py (a killed worker), test_run.py/test_config.py (bad configs).
"""
import _pickle
import csv
import glob
import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

# test_resume imports toy, which puts this checkout first on sys.path and imports msforge before mindspore
from test_distributed import free_port  # noqa: I001
from test_resume import (  # noqa: F401  (reference: the uninterrupted toy run, a module fixture)
    assert_same_params, csv_rows, find_segment, finish, reference, resumed_at, run, start)
from toy import ToyData, ToyModule, loaders, make_module, make_trainer, params_of

import mindspore as ms
from mindspore import ops

from callbacks import EarlyStopping, ModelCheckpoint
from msforge import Callback
from msforge import checkpoint as ckpt_io

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
DISK_FULL = os.path.join(TESTS, "fail_disk_full.py")
DP_NAN = os.path.join(TESTS, "fail_dp_nan.py")
# the kill steps come from this seed and are printed: a failure reproduces with the same seed; others explore more
KILL_SEED = int(os.environ.get("MSFORGE_KILL_SEED", "3"))
STEPS, PER_EPOCH = 24, 8  # the toy job: 3 epochs x 8 batches, a checkpoint after every step


def checkpoints_in(folder):
    return sorted(os.listdir(folder))


def assert_intact(path):
    """A checkpoint that loads with its crc checked, and whose weights and optimizer state are all finite."""
    params, state = ckpt_io.load(str(path))
    bad = [name for name, value in params.items() if value.dtype.kind == "f" and not np.isfinite(value).all()]
    assert not bad, f"{path}: non-finite values in {bad}"
    return params, state


def resume_point(step):
    """(global_step, epoch, batches_done) of a checkpoint saved after update ``step`` of the toy job."""
    epoch = (step - 1) // PER_EPOCH
    return step, epoch, step - PER_EPOCH * epoch


# == SIGKILL, five times in a row ======================================================================================
def kill_plan(seed=KILL_SEED, kills=5):
    """Five distinct random steps, each killed from inside (right after the step's checkpoint; an epoch's last step
    at its very end, after validation) or from outside (as soon as the step is printed: any instant after it)."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, STEPS - 2), kills))
    return [(step, rng.choice(["inside", "outside"])) for step in steps]


def test_five_sigkills_in_a_row_at_random_steps_end_bit_identical(reference, tmp_path):
    plan = kill_plan()
    print(f"kill plan (KILL_SEED={KILL_SEED}): {plan}")
    saved, resumes, segments, ref_params, ref_rows = 0, [], [], None, None  # saved: the step last.ckpt holds
    for i, (planned, how) in enumerate(plan + [(None, "finish")]):
        args = ["--ckpt", "last"] if i else []
        where = f"process {i} ({how} at {planned}, plan {plan}, seed {KILL_SEED})"
        if how == "finish":
            out, _ = run(tmp_path, *args, "--out", str(tmp_path / "final.npz"))
        else:
            step = max(planned, saved + 1)  # an outside kill can land a step or two late: the plan moves on
            assert step <= STEPS, f"{where}: the previous kill landed after the last step"
            if how == "inside":
                kind = "epoch_end" if step % PER_EPOCH == 0 else "batch_end"
                out, _ = run(tmp_path, *args, "--kill", f"{kind}:{step}", expect_rc=-signal.SIGKILL)
            else:
                proc, seen = start(tmp_path, *args), []
                for line in proc.stdout:
                    seen.append(line)
                    if line.strip() == f"STEP {step}":
                        proc.send_signal(signal.SIGKILL)
                        break
                rest, _ = finish(proc, -signal.SIGKILL)
                out = "".join(seen) + rest
        # every process resumes exactly where the previous one's last.ckpt was saved
        resumes.append(resumed_at(out))
        assert resumes[-1] == (resume_point(saved) if saved else (0, 0, 0)), where
        if how != "finish":
            last = tmp_path / "msforge_logs" / f"version_{i}" / "checkpoints" / "last.ckpt"
            _, state = assert_intact(last)
            if how == "inside":
                assert state["global_step"] == step, where
            else:  # saved at the printed step or, if the kill came late, a step whose save completed
                assert step <= state["global_step"] <= STEPS, where
            saved = state["global_step"]
        if ref_params is None:  # the uninterrupted run has been running in the background meanwhile
            ref_params, ref_rows = reference()
        rows = csv_rows(tmp_path / "msforge_logs" / f"version_{i}")
        segments.append(find_segment(ref_rows, rows, last_may_be_partial=how == "outside"))
    print(f"resumed at (step, epoch, batch): {resumes}")
    assert_same_params(ref_params, tmp_path / "final.npz")  # weights, Adam moments and step counters, bit for bit
    # the logged metrics: every row of the uninterrupted run was written, in order, by one of the six processes
    assert segments[0][0] == 0 and segments[-1][1] == len(ref_rows), segments
    for (_, prev_end), (begin, _) in zip(segments, segments[1:]):
        assert begin <= prev_end, f"metrics rows missing between processes: {segments} (plan {plan})"


# == disk full =========================================================================================================
def test_disk_full_while_saving_is_one_clear_error_and_loses_nothing(reference, tmp_path):
    proc = subprocess.run([sys.executable, DISK_FULL, str(tmp_path), "--fill"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout[-1000:]}\n{proc.stderr[-3000:]}"
    assert "LIMIT" in proc.stdout and "DONE" not in proc.stdout
    folder = tmp_path / "msforge_logs" / "version_0" / "checkpoints"
    error = proc.stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"msforge\.checkpoint\.CheckpointError: could not write checkpoint '(.+)': File too large "
                     r"\(EFBIG\)", error)
    assert m, error
    failed = m.group(1)
    assert os.path.dirname(failed) == str(folder)
    k = int(re.fullmatch(r"epoch=0-step=(\d+)\.ckpt", os.path.basename(failed)).group(1))
    assert k >= 3, f"the limit was set after step 2 and must leave room for step 3: failed at step {k}"
    # earlier checkpoints intact, nothing half-written under a final name, no temporary file (.name.tmp-PID.*)
    assert checkpoints_in(folder) == sorted([f"epoch=0-step={s}.ckpt" for s in range(1, k)] + ["last.ckpt"])
    assert not glob.glob(str(tmp_path / "**" / ".*tmp*"), recursive=True)
    for name in checkpoints_in(folder):
        _, state = assert_intact(folder / name)
    assert ckpt_io.load(str(folder / "last.ckpt"))[1]["global_step"] == k - 1
    # the disk has room again: the run resumes from its last good checkpoint and ends as if nothing had happened
    resumed = subprocess.run([sys.executable, DISK_FULL, str(tmp_path), "--ckpt", str(folder / "last.ckpt"), "--out",
                              str(tmp_path / "final.npz")], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_at(resumed.stdout) == resume_point(k - 1)
    ref_params, _ = reference()
    assert_same_params(ref_params, tmp_path / "final.npz")


# == NaN / inf =========================================================================================================
class Batches:
    """The toy data as ``n_batches`` batches of 4; ``poison`` maps (epoch, batch_idx) to (field, value) written into
    the first sample of that batch (field "x" or "y")."""

    def __init__(self, n_batches=4, poison=None):
        data = ToyData(4 * n_batches)
        self.batches = [(data.x[i:i + 4], data.y[i:i + 4]) for i in range(0, len(data), 4)]
        self.poison, self.epoch = dict(poison or {}), 0

    def set_epoch(self, epoch):  # the Trainer calls it before each epoch
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, (x, y) in enumerate(self.batches):
            x, y = x.copy(), y.copy()
            if (self.epoch, i) in self.poison:
                field, value = self.poison[(self.epoch, i)]
                (x if field == "x" else y)[0, 0] = value
            yield x, y


class Seen(Callback):
    """Records every on_train_batch_end (global step) and the weights it saw."""

    def __init__(self):
        self.steps, self.weights = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append(trainer.global_step)
        self.weights.append(module.l1.weight.asnumpy().copy())


def test_nan_loss_stops_with_the_reason_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    seen = Seen()
    checkpoint = ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, save_last=True)
    trainer = make_trainer(tmp_path / "nan", max_epochs=3, callbacks=[checkpoint, seen])
    trainer.fit(make_module(), train_dataloaders=Batches(poison={(1, 1): ("x", math.nan)}),
                val_dataloaders=loaders()[1])
    reason = "training loss is nan at global step 6 (epoch 1, batch 1)"
    assert trainer.stop_reason == reason and trainer.diverged and trainer.should_stop
    assert reason in capsys.readouterr().err
    assert trainer.global_step == 6 and trainer.current_epoch == 1  # stopped at once, mid-epoch
    assert seen.steps[-1] == 6 and np.isnan(seen.weights[-1]).any()  # the hooks still ran; the weights are gone
    folder = os.path.dirname(checkpoint.last_model_path)
    assert checkpoints_in(folder) == [f"epoch={(s - 1) // 4}-step={s}.ckpt" for s in range(1, 6)] + ["last.ckpt"]
    params, state = assert_intact(os.path.join(folder, "last.ckpt"))
    assert state["global_step"] == 5 and np.array_equal(params["l1.weight"], seen.weights[4])
    # the kept checkpoint resumes (clean data now) to the same weights as a run that never saw the NaN
    clean = make_trainer(tmp_path / "clean", max_epochs=3, enable_checkpointing=False, logger=False)
    clean.fit(make_module(), train_dataloaders=Batches(), val_dataloaders=loaders()[1])
    resumed = make_trainer(tmp_path / "nan", max_epochs=3, logger=False)
    resumed.fit(make_module(seed=1), train_dataloaders=Batches(), val_dataloaders=loaders()[1],
                ckpt_path=checkpoint.last_model_path)
    want, got = params_of(clean), params_of(resumed)
    assert not [name for name in want if not np.array_equal(want[name], got[name])]


def test_nan_at_an_epoch_end_with_early_stopping_check_finite_writes_no_checkpoint(tmp_path, capsys):
    # the last batch of epoch 1 poisons the weights: the epoch-end validation gives val_loss = nan, EarlyStopping
    # stops on it too, and the epoch-end checkpoint (best and last) must not be written
    stopping = EarlyStopping("val_loss", check_finite=True, patience=100)
    checkpoint = ModelCheckpoint(monitor="val_loss", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=4, callbacks=[stopping, checkpoint])
    trainer.fit(make_module(), train_dataloaders=Batches(poison={(1, 3): ("x", math.nan)}),
                val_dataloaders=loaders()[1])
    out, err = capsys.readouterr()
    assert trainer.stop_reason == "training loss is nan at global step 8 (epoch 1, batch 3)"
    assert trainer.stop_reason in err
    assert stopping.stopping_reason.startswith("Monitored metric val_loss = nan is not finite")
    assert stopping.stopping_reason in out
    assert trainer.current_epoch == 2 and trainer.global_step == 8
    folder = os.path.dirname(checkpoint.last_model_path)
    assert checkpoints_in(folder) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert checkpoint.best_model_path == os.path.join(folder, "epoch=0-step=4.ckpt")
    for name in checkpoints_in(folder):
        _, state = assert_intact(os.path.join(folder, name))
        assert state["global_step"] == 4


def test_early_stopping_on_a_nan_val_loss_keeps_the_best_checkpoint(tmp_path, capsys):
    # finite weights, a NaN validation metric: EarlyStopping stops with the reason; NaN never ranks as best
    stopping = EarlyStopping("val_loss", check_finite=True, patience=100)
    checkpoint = ModelCheckpoint(monitor="val_loss", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=5, callbacks=[stopping, checkpoint])
    trainer.fit(make_module(val_script=[1.0, 0.8, math.nan]), train_dataloaders=Batches(n_batches=2),
                val_dataloaders=loaders()[1])
    assert "Monitored metric val_loss = nan is not finite" in capsys.readouterr().out
    assert trainer.current_epoch == 3 and not trainer.diverged  # the weights are fine: not a divergence
    folder = os.path.dirname(checkpoint.last_model_path)
    assert checkpoints_in(folder) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert checkpoint.best_model_path == os.path.join(folder, "epoch=1-step=4.ckpt")
    assert checkpoint.best_model_score == 0.8
    assert assert_intact(checkpoint.best_model_path)[1]["global_step"] == 4
    assert assert_intact(checkpoint.last_model_path)[1]["global_step"] == 6


@pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun is not on PATH")
def test_nan_on_one_data_parallel_rank_stops_every_rank_at_the_same_step(tmp_path):
    # only rank 1's loss is NaN: without agreeing, rank 0 would train on and rank 1 hang in the next all-reduce
    out = str(tmp_path / "out")
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "--join=True", f"--log_dir={tmp_path / 'logs'}", DP_NAN, str(tmp_path / "root"), "--out", out]
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert time.monotonic() - began < 180
    ranks = [open(f"{out}.rank{r}.txt").read().split(" ", 2) for r in (0, 1)]
    assert ranks[0][:2] == ranks[1][:2] == ["3", "True"]  # both stopped at step 3, diverged
    assert ranks[0][2].strip() == "training loss is not finite on another rank at global step 3 (epoch 0, batch 2)"
    assert ranks[1][2].strip() == "training loss is nan at global step 3 (epoch 0, batch 2)"
    folder = tmp_path / "root" / "msforge_logs" / "version_0" / "checkpoints"
    assert checkpoints_in(folder) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert assert_intact(folder / "last.ckpt")[1]["global_step"] == 2


class InfGradient(ToyModule):
    """A finite loss whose gradient is NaN when the batch's first input is 0: sqrt(|b * x|) has slope inf at 0."""

    def training_step(self, batch):
        x, y = batch
        err = self.construct(x) - y
        return (err * err).mean() + 1e-3 * ops.sqrt(ops.abs(self.l1.bias[0] * x[0, 0]))


def test_non_finite_weights_after_a_finite_loss_are_never_saved(tmp_path, capsys):
    checkpoint = ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[checkpoint])
    ms.set_seed(0)
    trainer.fit(InfGradient(), train_dataloaders=Batches(poison={(0, 2): ("x", 0.0)}),
                val_dataloaders=loaders()[1])
    reason = "weight 'l1.bias' is not finite at global step 3 (epoch 0, batch 2)"
    assert trainer.stop_reason == reason and reason in capsys.readouterr().err
    assert math.isfinite(trainer.callback_metrics["train_loss"]) and trainer.global_step == 3
    folder = os.path.dirname(checkpoint.last_model_path)
    assert checkpoints_in(folder) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"]
    assert assert_intact(checkpoint.last_model_path)[1]["global_step"] == 2


def test_dynamic_loss_scaling_skips_and_counts_overflowed_steps_and_keeps_going(tmp_path):
    seen = Seen()
    checkpoint = ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=2, loss_scale="dynamic", callbacks=[checkpoint, seen])
    inf = {(e, b): ("y", math.inf) for e in (0, 1) for b in (1, 3)}  # steps 2, 4, 6, 8 overflow
    trainer.fit(make_module(), train_dataloaders=Batches(poison=inf), val_dataloaders=loaders()[1])
    assert trainer.global_step == 8 and trainer.current_epoch == 2  # ran to the end
    assert trainer.skipped_steps == 4 and not trainer.diverged and trainer.stop_reason is None
    assert trainer.loss_scale_value == 2.0**16 / 2**4  # halved at each overflow
    for skipped in (1, 3, 5, 7):  # steps 2, 4, 6, 8: weights unchanged by the skipped update
        assert np.array_equal(seen.weights[skipped], seen.weights[skipped - 1])
    assert not np.array_equal(seen.weights[2], seen.weights[1])  # the clean steps train
    assert trainer.logged_metrics["skipped_steps"] == 4.0
    logged = [float(v) for v in csv_column(trainer.log_dir, "skipped_steps")]
    assert logged == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0]  # one row per step (log_every_n_steps=1)
    folder = os.path.dirname(checkpoint.last_model_path)
    assert len(checkpoints_in(folder)) == 9  # steps 1-8 and last: the overflowed steps saved as usual
    counts = [assert_intact(os.path.join(folder, f"epoch={(s - 1) // 4}-step={s}.ckpt"))[1]["skipped_steps"]
              for s in range(1, 9)]
    assert counts == [0, 1, 1, 2, 2, 3, 3, 4]  # and a resumed run keeps counting from there


def csv_column(log_dir, name):
    with open(os.path.join(log_dir, "metrics.csv"), newline="") as f:
        return [r[name] for r in csv.DictReader(f) if r.get(name) not in (None, "")]


# == no pickle =========================================================================================================
def refuse(*args, **kwargs):
    raise AssertionError("a checkpoint was unpickled")


def test_checkpoints_load_and_resume_with_pickle_disabled(tmp_path, monkeypatch):
    train, val = loaders(n_train=8)
    make_trainer(tmp_path, max_epochs=1).fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    last = str(tmp_path / "msforge_logs" / "version_0" / "checkpoints" / "last.ckpt")
    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, refuse)
    with pytest.raises(AssertionError, match="unpickled"):
        pickle.loads(pickle.dumps({"a": 1}))  # the trap works
    params, state = ckpt_io.load(last)
    assert state["global_step"] == 2 and "l1.weight" in params
    assert "l1.weight" in ms.load_checkpoint(last, crc_check=True)  # plain MindSpore too
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(make_module(seed=1), train_dataloaders=train, val_dataloaders=val, ckpt_path="last")
    assert trainer.global_step == 4
    trainer.validate(make_module(seed=2), dataloaders=val, ckpt_path=last, verbose=False)


UNSAFE = [  # ways to run code while reading a file
    (r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|joblib|shelve|marshal)\b", "pickle-like import"),
    (r"\b(pickle|cPickle|_pickle|dill|cloudpickle|joblib)\.(load|loads|Unpickler)\b", "unpickling call"),
    (r"""import_module\(\s*["'](pickle|cPickle|_pickle|dill|cloudpickle|joblib)["']""", "pickle-like import"),
    (r"\btorch\.load\s*\(", "torch.load"),
    (r"\bread_pickle\s*\(", "pandas read_pickle"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\byaml\.(load|load_all|full_load|full_load_all|unsafe_load|unsafe_load_all)\s*\(", "yaml load other than "
                                                                                         "safe_load"),
    (r"\byaml\.(Loader|FullLoader|UnsafeLoader)\b", "unsafe yaml Loader"),
]


def unsafe_lines(text):
    return [(n, what) for n, line in enumerate(text.splitlines(), 1) for pattern, what in UNSAFE
            if re.search(pattern, line)]


def test_no_source_file_can_unpickle():
    planted = "import pickle\nx = np.load(f, allow_pickle=True)\nyaml.load(s, Loader=yaml.Loader)\nyaml.safe_load(s)"
    assert [n for n, _ in unsafe_lines(planted)] == [1, 2, 3, 3]  # the patterns catch what they must, not safe_load
    files = [p for folder in ("msforge", "callbacks", "datamodules", "models", "experiments")
             for p in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True)]
    assert len([p for p in files if os.sep + "msforge" + os.sep in p]) >= 5, files
    found = [f"{os.path.relpath(p, REPO)}:{n}: {what}" for p in files for n, what in unsafe_lines(open(p).read())]
    assert not found, found
