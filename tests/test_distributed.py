"""Data parallel with MindSpore's own engine: real msrun launches of 2 CPU workers over loopback (MCCL)."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "dp_script.py")
pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun is not on PATH")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single(tmp_path, name, *args):
    out = str(tmp_path / name)
    subprocess.run([sys.executable, SCRIPT, "--root", str(tmp_path / f"{name}_root"), "--out", out, *args],
                   check=True, capture_output=True, timeout=300)
    return out


def msrun(tmp_path, name, *args, timeout=300):
    out = str(tmp_path / name)
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "--join=True", f"--log_dir={tmp_path / (name + '_logs')}",
           SCRIPT, "--root", str(tmp_path / f"{name}_root"), "--out", out, "--strategy", "data_parallel", *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out, proc, time.monotonic() - start


def weights(out, rank=0):
    return np.load(f"{out}.rank{rank}.npy")


def files_under(root):
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                  if os.path.isfile(p))


@pytest.fixture(scope="module")
def one_two_epochs(tmp_path_factory):
    """One process, batch 16, 2 epochs: what 2 workers x batch 8 must equal (the same global batch)."""
    return single(tmp_path_factory.mktemp("one_process"), "one2", "--batch", "16", "--epochs", "2")


def test_two_workers_equal_one_process_and_write_one_set_of_files_and_resume(tmp_path, one_two_epochs):
    # same global batch: 2 workers x 8 == 1 process x 16
    one = single(tmp_path, "one", "--batch", "16", "--epochs", "3")
    two, proc, _ = msrun(tmp_path, "two", "--batch", "8", "--epochs", "2")
    assert proc.returncode == 0, proc.stdout[-2000:]
    np.testing.assert_allclose(weights(two), weights(one_two_epochs), atol=1e-5)
    assert np.abs(weights(two)).max() > 0.5  # it trained
    two_root = str(tmp_path / "two_root")
    # one run folder, written by rank 0 only: one checkpoint folder and one set of logs
    assert sorted(os.listdir(os.path.join(two_root, "msforge_logs"))) == ["version_0"]
    written = files_under(two_root)
    assert "msforge_logs/version_0/checkpoints/last.ckpt" in written
    assert sum(f.endswith("metrics.csv") for f in written) == 1
    assert len([f for f in written if "tfevents" in f]) == 1
    np.testing.assert_array_equal(weights(two, 0), weights(two, 1))  # ranks agree
    # reduced validation metric and run folder are the same on both ranks
    assert open(f"{two}.rank0.txt").read() == open(f"{two}.rank1.txt").read()
    # resume the 2-worker run for a third epoch: equal to 3 epochs in one process
    last = os.path.join(two_root, "msforge_logs", "version_0", "checkpoints", "last.ckpt")
    three, proc, _ = msrun(tmp_path, "three", "--batch", "8", "--epochs", "3", "--ckpt", last)
    assert proc.returncode == 0, proc.stdout[-2000:]
    np.testing.assert_allclose(weights(three), weights(one), atol=1e-5)
    assert open(f"{three}.rank0.txt").read().split()[0] == "24"  # 3 epochs x 8 global steps


def test_two_workers_with_several_steps_per_call_equal_one_process_one_step_at_a_time(tmp_path, one_two_epochs):
    # steps_per_execution=4: the gradient all-reduce runs inside MultiStep's graph loop, at every step
    two, proc, _ = msrun(tmp_path, "two", "--batch", "8", "--epochs", "2", "--spe", "4")
    assert proc.returncode == 0, proc.stdout[-2000:]
    np.testing.assert_allclose(weights(two), weights(one_two_epochs), atol=1e-5)
    np.testing.assert_array_equal(weights(two, 0), weights(two, 1))
    assert open(f"{two}.rank0.txt").read().split()[0] == "16"  # 2 epochs x 8 global steps


def test_a_killed_worker_ends_the_job_with_an_error_not_a_hang(tmp_path):
    _, proc, seconds = msrun(tmp_path, "killed", "--batch", "8", "--epochs", "50", "--kill-rank", "1",
                             timeout=240)
    assert proc.returncode != 0
    assert "exited with exception" in proc.stdout + proc.stderr
    assert seconds < 180
