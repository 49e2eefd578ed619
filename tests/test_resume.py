"""Exact resume: a run killed (SIGKILL, SIGTERM) and resumed in fresh processes ends bit-identical to an uninterrupted
run, and logs the same metrics from the resume point on.

The job is ``tests/toy.py`` as a script: 3 epochs x 8 shuffled batches, Adam, a per-step StepLR, validation every
epoch (plus the sanity check), ModelCheckpoint(every_n_train_steps=1, save_last=True), LearningRateMonitor, CSV and
TensorBoard loggers, graph mode on CPU. Every process compiles its own graph, so a resumed run shares nothing with the
killed one but the checkpoint file.
"""
import csv
import glob
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from toy import loaders, make_module, make_trainer, params_of

TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy.py")
TIMING = {"epoch_time", "throughput"}  # wall-clock values: the only logged metrics allowed to differ


def start(root, *args):
    return subprocess.Popen([sys.executable, TOY, str(root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, expect_rc=0):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}, expected {expect_rc}:\n{out[-2000:]}\n{err[-3000:]}"
    return out, err


def run(root, *args, expect_rc=0):
    return finish(start(root, *args), expect_rc)


def resumed_at(out):
    m = re.search(r"RESUMED step=(\d+) epoch=(\d+) batches=(\d+)", out)
    return tuple(int(g) for g in m.groups())


def csv_rows(version_dir):
    """The metric rows of one run, each as a sorted tuple of its non-empty (column, value) pairs, timing excluded."""
    with open(os.path.join(version_dir, "metrics.csv"), newline="") as f:
        return [tuple(sorted((k, v) for k, v in r.items() if v not in ("", None) and k not in TIMING))
                for r in csv.DictReader(f)]


def find_segment(reference, rows, last_may_be_partial=False):
    """Where ``rows`` occur as a contiguous run inside ``reference`` (exact strings, i.e. bit-identical floats).

    A process killed from outside may have died writing its last row: then that row alone may differ."""
    for candidate in ([rows, rows[:-1]] if last_may_be_partial else [rows]):
        for j in range(len(reference) - len(candidate) + 1):
            if reference[j:j + len(candidate)] == candidate:
                return j, j + len(candidate)
    raise AssertionError(f"rows not found in the uninterrupted run's metrics.csv; first rows: {rows[:3]}")


def assert_same_params(reference_npz, npz):
    ref, got = np.load(reference_npz), np.load(npz)
    assert sorted(ref.files) == sorted(got.files)
    differing = [k for k in ref.files if not np.array_equal(ref[k], got[k])]
    assert not differing, f"parameters differ from the uninterrupted run: {differing}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run; it runs in the background while a test starts its own processes."""
    root = tmp_path_factory.mktemp("uninterrupted")
    proc, result = start(root, "--out", str(root / "final.npz")), []

    def wait():
        if not result:
            out, _ = finish(proc)
            assert resumed_at(out) == (0, 0, 0) and "STEP 24" in out
            result.extend([root / "final.npz", csv_rows(root / "msforge_logs" / "version_0")])
        return result

    yield wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigkill_mid_epoch_at_an_epoch_end_and_at_a_random_step_resumes_bit_identically(reference, tmp_path):
    kill_step = random.randint(11, 21)  # printed in the assertion messages below if anything differs
    # (kill, how the next process must resume): each process resumes the previous one's last.ckpt
    chain = [("batch_end:5", None),  # mid-epoch 0, right after step 5 was saved
             ("epoch_end:8", (5, 0, 5)),  # at the end of epoch 0, after its validation and bookkeeping
             (f"external:{kill_step}", (8, 0, 8)),  # SIGKILL from outside, as soon as the step is printed
             ("", None)]
    segments = []
    for i, (kill, expected_resume) in enumerate(chain):
        args = ["--ckpt", "last"] if i else []
        if kill.startswith("external"):
            proc = start(tmp_path, *args)
            seen = []
            for line in proc.stdout:
                seen.append(line)
                if line.strip() == f"STEP {kill_step}":
                    proc.send_signal(signal.SIGKILL)
                    break
            rest, _ = finish(proc, -signal.SIGKILL)
            out = "".join(seen) + rest
        elif kill:
            out, _ = run(tmp_path, *args, "--kill", kill, expect_rc=-signal.SIGKILL)
        else:
            out, _ = run(tmp_path, *args, "--out", str(tmp_path / "final.npz"))
        step, epoch, batches = resumed_at(out)
        if expected_resume is not None:
            assert (step, epoch, batches) == expected_resume, f"process {i} ({kill}): resumed at {step, epoch, batches}"
        elif i:  # after the external kill: at the printed step or a later one whose save had completed
            assert kill_step <= step <= 24 and batches == step - 8 * epoch, (kill_step, out[:300])
        if i == 0:
            ref_params, ref_rows = reference()
        version = tmp_path / "msforge_logs" / f"version_{i}"
        rows = csv_rows(version)
        segments.append(find_segment(ref_rows, rows, last_may_be_partial=kill.startswith("external")))
        assert int(dict(rows[0])["step"]) in (step, step + 1), f"process {i} logged from step {dict(rows[0])['step']}"
    assert_same_params(ref_params, tmp_path / "final.npz")
    assert segments[0][0] == 0 and segments[-1][1] == len(ref_rows), (segments, len(ref_rows))
    for (_, prev_end), (begin, _) in zip(segments, segments[1:]):
        assert begin <= prev_end, f"metrics rows missing between processes: {segments} (kill step {kill_step})"


def test_sigterm_finishes_the_step_saves_exits_nonzero_and_resumes_bit_identically(reference, tmp_path):
    ref_params, ref_rows = reference()
    # epoch-level checkpoints only: the mid-epoch last.ckpt can only come from the SIGTERM handling
    proc = start(tmp_path, "--every", "epoch")
    for line in proc.stdout:
        if line.strip() == "STEP 11":
            proc.send_signal(signal.SIGTERM)
            break
    out, err = finish(proc, 128 + signal.SIGTERM)
    assert "DONE" not in out  # fit did not return normally: the script after it did not run
    saved = re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved to (\S+)\. Resume with", err)
    assert saved, err[-2000:]
    stop_step, path = int(saved.group(1)), saved.group(2)
    assert 11 <= stop_step < 16 and os.path.basename(path) == "last.ckpt" and os.path.isfile(path)
    assert not glob.glob(str(tmp_path / "**" / ".*tmp*"), recursive=True)  # the save completed and cleaned up

    out, _ = run(tmp_path, "--ckpt", path, "--every", "epoch", "--out", str(tmp_path / "final.npz"))
    assert resumed_at(out) == (stop_step, 1, stop_step - 8)
    assert_same_params(ref_params, tmp_path / "final.npz")
    rows = csv_rows(tmp_path / "msforge_logs" / "version_1")
    assert find_segment(ref_rows, rows)[1] == len(ref_rows)
    assert int(dict(rows[0])["step"]) == stop_step + 1


def test_resume_restores_the_metrics_that_schedulers_and_callbacks_read(tmp_path):
    """ReduceLROnPlateau stepped every update reads the latest val_loss: after a resume at an epoch end the first
    updates must still see the val_loss of that epoch's validation, as the uninterrupted run does."""
    train, val = loaders(n_train=16)
    reference = make_trainer(tmp_path / "whole", max_epochs=3, enable_checkpointing=False, logger=False)
    reference.fit(make_module(scheduler="plateau_step", step_size=1), train_dataloaders=train,
                  val_dataloaders=val)
    first = make_trainer(tmp_path / "split", max_epochs=1, logger=False)
    first.fit(make_module(scheduler="plateau_step", step_size=1), train_dataloaders=train, val_dataloaders=val)
    resumed = make_trainer(tmp_path / "split", max_epochs=3, logger=False)
    resumed.fit(make_module(scheduler="plateau_step", step_size=1, seed=1), train_dataloaders=train,
                val_dataloaders=val, ckpt_path="last")
    want, got = params_of(reference), params_of(resumed)
    assert not [k for k in want if not np.array_equal(want[k], got[k])]
    assert resumed.callback_metrics["val_loss"] == reference.callback_metrics["val_loss"]
