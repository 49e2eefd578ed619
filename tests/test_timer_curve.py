"""callbacks.Timer (elapsed training time in metrics.csv, carried over a resume) and experiments/learning_curve.py
read back from a real run folder."""
import csv
import json
import os
import subprocess
import sys
import time

import yaml

from toy import loaders, make_module, make_trainer  # noqa: I001  (toy fixes sys.path first)

from msforge import Callback

from callbacks import Timer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVE = os.path.join(ROOT, "experiments", "learning_curve.py")


class SlowSteps(Callback):
    """Sleeps after each training batch, so the elapsed time has a known lower bound."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        time.sleep(0.05)


def timer_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [(int(r["step"]), float(r["time_train_s"]), float(r["time_val_s"]))
                for r in csv.DictReader(f) if r.get("time_train_s")]


def test_timer_logs_elapsed_time_at_each_validation_and_carries_it_over_a_resume(tmp_path):
    train, val = loaders(n_train=16)  # 4 batches per epoch
    trainer = make_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1, callbacks=[Timer(), SlowSteps()])
    trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    rows = timer_rows(trainer.log_dir)
    assert [r[0] for r in rows] == [4, 8]  # one row per validation, none for the sanity check
    assert rows[0][1] >= 4 * 0.05 and rows[1][1] >= rows[0][1] + 4 * 0.05  # the sleeps are counted
    assert 0 < rows[0][2] < rows[1][2] < rows[1][1]

    resumed = make_trainer(tmp_path, max_epochs=3, num_sanity_val_steps=0, callbacks=[Timer()])
    resumed.fit(make_module(), train_dataloaders=train, val_dataloaders=val, ckpt_path=trainer.checkpoint_callback.last_model_path)
    (step, elapsed, _), = timer_rows(resumed.log_dir)
    assert step == 12 and elapsed > rows[1][1]  # continues from the first run's count


def test_learning_curve_table_png_and_fit_from_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"accumulate_grad_batches": 1},
                                                     "data": {"init_args": {"batch_size": 16}}}))
    with open(run / "metrics.csv", "w", newline="") as f:  # the layout CSVLogger writes: one row per log call
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", "val_mse", "val_mae", "val_ssim", "time_train_s", "time_val_s"])
        for i, step in enumerate((100, 200, 400, 800)):
            mse = 200.0 * (step * 16) ** -0.25  # an exact power law: the fit must recover it
            writer.writerow([step, 0, mse, 2 * mse, 0.5, "", ""])
            writer.writerow([step, 0, "", "", "", 60.0 * (i + 1), 1.0])
    (run / "test_metrics.json").write_text(json.dumps(
        {"model": {"test_mse": 20.5, "test_mae": 41.0, "test_ssim": 0.6}, "sequences": 2000}))
    out = subprocess.run([sys.executable, CURVE, str(run), "--target", "10"], capture_output=True, text=True,
                         check=True).stdout
    assert "| 800 | 12,800 | 4.0 |" in out and "| test (2,000 videos) |" in out and "**20.50**" in out
    assert "videos^-0.250" in out
    expected = (200.0 / 10) ** 4  # videos where 200 * v**-0.25 == 10
    assert f"~{expected:,.0f} videos" in out
    assert (run / "learning_curve.png").stat().st_size > 10_000


def test_learning_curve_names_a_run_without_timer(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"trainer": {}, "data": {"init_args": {"batch_size": 4}}}))
    (tmp_path / "metrics.csv").write_text("step,val_mse,val_mae,val_ssim\n10,5,6,0.5\n")
    result = subprocess.run([sys.executable, CURVE, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "no time_train_s at step(s) [10]: add callbacks.Timer" in result.stderr
