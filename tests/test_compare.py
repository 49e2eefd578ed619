"""experiments/compare.py: the fair copy of a config (pure), and one real comparison of the main job's ConvLSTM,
shrunk to seconds, read back from the Markdown table it writes."""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import compare  # noqa: E402


def main_job_config():
    with open(os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")) as f:
        return yaml.safe_load(f)


def test_fair_config_sets_one_loss_one_precision_and_drops_the_step_sized_schedule():
    original = main_job_config()
    assert original["model"]["init_args"]["loss"] != "mse" and "lr_scheduler" in original  # what the test is about
    fair = compare.fair_config(original, "convlstm", 1.5, 64, 7, "somewhere")
    assert fair["model"]["init_args"]["loss"] == "mse"
    assert fair["trainer"]["precision"] == "32"
    assert "lr_scheduler" not in fair
    assert fair["trainer"]["max_time"] == 90 and fair["trainer"]["max_epochs"] == 1
    assert fair["trainer"]["val_check_interval"] == 7 and fair["trainer"]["default_root_dir"] == "somewhere"
    assert fair["data"]["init_args"]["test_size"] == 64
    assert fair["data"]["init_args"]["samples_per_epoch"] == compare.ONE_EPOCH
    assert not any("EarlyStopping" in c["class_path"] for c in fair["callbacks"])
    assert any(c["class_path"].endswith("Timer") for c in fair["callbacks"])
    # the model itself is left alone, and so is the caller's dict
    for key in ("hidden", "kernel_sizes", "patch", "output_activation", "lr"):
        assert fair["model"]["init_args"][key] == original["model"]["init_args"][key]
    assert original == main_job_config()

    weighted = compare.fair_config(original, "convlstm", 1, 8, None, "r", loss={"mse": 1.0, "l1": 0.5},
                                   precision="bf16-mixed")
    assert weighted["model"]["init_args"]["loss"] == {"mse": 1.0, "l1": 0.5}
    assert weighted["trainer"]["precision"] == "bf16-mixed"


def test_compare_trains_tests_and_writes_the_table_and_the_plot(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "compare.py"), "convlstm",
                           "--minutes", "0.5", "--test-size", "16", "--val-every", "5", "--loss", "{mse: 1, l1: 0.5}",
                           "--root", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "report.md").read_text()
    assert "loss {'mse': 1, 'l1': 0.5}, precision 32, each config's constant learning rate" in table
    row = next(line for line in table.splitlines() if line.startswith("| convlstm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "260,112"  # the main job's parameter count
    videos, mse, mae, ssim = int(cells[4].replace(",", "")), float(cells[5]), float(cells[6]), float(cells[7])
    assert videos > 0 and videos % 16 == 0  # whole batches of the config's 16
    assert 0 < mse < 1000 and 0 < mae < 4096 and -1 < ssim <= 1
    assert re.search(r"^\| all-black \| 0 \| 0 \| \| \| \d+\.\d\d \|", table, re.M)  # the baselines, same videos
    assert (tmp_path / "report.png").stat().st_size > 1000
    fair = yaml.safe_load((tmp_path / "runs" / "compare_convlstm.yaml").read_text())
    assert fair["model"]["init_args"]["loss"] == {"mse": 1, "l1": 0.5} and "lr_scheduler" not in fair
