"""What users watch: TensorBoard events (read back with TensorBoard's own reader), metrics.csv, hparams.yaml, the run
folders, and the progress output."""
import csv
import os
import sys

import pytest
import yaml

from toy import loaders, make_module, make_trainer  # noqa: I001  (toy fixes sys.path first)

from mindspore import nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import LearningRateMonitor, TensorBoard

TRAIN_STEPS = [2, 4, 6, 8]  # 2 epochs x 4 batches, log_every_n_steps=2
EPOCH_ENDS = [4, 8]


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def steps(events, tag):
    return [e.step for e in events.Scalars(tag)]


def read_csv(folder):
    with open(os.path.join(folder, "metrics.csv"), newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two fits in one root: version_0 with LearningRateMonitor, dynamic loss scaling and TensorBoard(log_graph=True),
    version_1 with the default callbacks only."""
    root = tmp_path_factory.mktemp("loggers")
    train, val = loaders(n_train=16)
    module = make_module(images=True, scheduler="step", step_size=3)
    module.hparams["optimizer_class"] = nn.Adam  # not YAML/TensorBoard-plain: written as its str()
    module.hparams["widths"] = (8, 1)
    trainer = make_trainer(root, log_every_n_steps=2, loss_scale="dynamic", num_sanity_val_steps=2,
                           callbacks=[LearningRateMonitor("step"), TensorBoard(log_graph=True)])
    with pytest.warns(UserWarning, match="cannot be exported as a TensorBoard graph"):
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    second = make_trainer(root, log_every_n_steps=2)
    second.fit(make_module(scheduler="step", step_size=3), train_dataloaders=train, val_dataloaders=val)
    return root / "msforge_logs", trainer, second


def test_each_fit_gets_the_next_version_folder(runs):
    logs, trainer, second = runs
    assert sorted(os.listdir(logs)) == ["version_0", "version_1"]
    assert trainer.log_dir == str(logs / "version_0") and second.log_dir == str(logs / "version_1")
    for version in ("version_0", "version_1"):
        files = os.listdir(logs / version)
        assert {"checkpoints", "metrics.csv", "hparams.yaml"} <= set(files)
        assert any(f.startswith("events.out.tfevents.") for f in files)


def test_tensorboard_scalars_at_global_steps(runs):
    logs, trainer, _ = runs
    events = read_events(logs / "version_0")
    for tag in ("train_loss", "lr", "loss_scale", "skipped_steps"):
        assert steps(events, tag) == TRAIN_STEPS, tag
    for tag in ("train_loss_epoch", "val_loss", "epoch", "epoch_time", "throughput"):
        assert steps(events, tag) == EPOCH_ENDS, tag
    assert [e.value for e in events.Scalars("epoch")] == [0.0, 1.0]
    assert all(e.value > 0 for e in events.Scalars("throughput"))
    assert [e.value for e in events.Scalars("loss_scale")] == [2.0 ** 16] * 4
    # StepLR(step_size=3, gamma=0.5) per update: the rate each logged update used
    assert [round(e.value, 6) for e in events.Scalars("lr")] == [0.01, 0.005, 0.005, 0.0025]
    assert events.Scalars("val_loss")[-1].value == pytest.approx(trainer.callback_metrics["val_loss"], rel=1e-6)


def test_tensorboard_images_hparams_and_lr_without_monitor(runs):
    logs, _, _ = runs
    events = read_events(logs / "version_0")
    frames = events.Images("frames")
    assert [im.step for im in frames] == EPOCH_ENDS  # first batch of each validation, not the sanity check
    assert (frames[0].width, frames[0].height) == (3 * 8 + 2 * 2, 6)  # 3 frames of 8 px side by side, 2 px apart
    assert set(events.PluginTagToContent("hparams")) == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert b"optimizer_class" in events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert "model/text_summary" in events.Tags()["tensors"]  # log_graph: the cell structure as text
    assert b"Dense" in events.Tensors("model/text_summary")[0].tensor_proto.string_val[0]
    # version_1 has no LearningRateMonitor: the TensorBoard callback writes lr itself, the CSV has none
    plain = read_events(logs / "version_1")
    assert steps(plain, "lr") == TRAIN_STEPS and "loss_scale" not in plain.Tags()["scalars"]
    assert "frames" not in plain.Tags()["images"]
    assert "lr" not in read_csv(logs / "version_1")[0]


def test_metrics_csv_has_a_column_per_metric_and_a_row_per_event(runs):
    logs, _, _ = runs
    columns, rows = read_csv(logs / "version_0")
    assert columns[:2] == ["step", "epoch"]
    assert set(columns) == {"step", "epoch", "train_loss", "loss_scale", "skipped_steps", "lr", "train_loss_epoch",
                            "epoch_time", "throughput", "val_loss"}
    # per logged update: train_loss (+ loss scale) then lr; per epoch: the epoch means, then validation
    assert len(rows) == 2 * len(TRAIN_STEPS) + 2 * len(EPOCH_ENDS)
    assert [int(r["step"]) for r in rows if r["train_loss"]] == TRAIN_STEPS
    assert [(int(r["step"]), int(r["epoch"])) for r in rows if r["val_loss"]] == [(4, 0), (8, 1)]
    first = rows[0]  # written before val_loss existed: the file was rewritten with the wider header
    assert first["val_loss"] == "" and float(first["train_loss"]) > 0
    tb = read_events(logs / "version_0").Scalars("train_loss")
    assert [e.value for e in tb] == pytest.approx([float(r["train_loss"]) for r in rows if r["train_loss"]])


def test_hparams_yaml(runs):
    logs, _, _ = runs
    with open(logs / "version_0" / "hparams.yaml") as f:
        hparams = yaml.safe_load(f)
    assert hparams["hidden"] == 8 and hparams["lr"] == 0.01 and hparams["scheduler"] == "step"
    assert hparams["widths"] == [8, 1] and hparams["optimizer_class"].startswith("<class 'mindspore")
    assert "val_script" not in hparams


def test_progress_bar_prints_one_line_per_epoch_when_not_a_terminal(tmp_path, capfd):
    train, val = loaders(n_train=8)
    trainer = make_trainer(tmp_path, enable_progress_bar=True, max_epochs=3, logger=False)
    trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    lines = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("Epoch")]
    assert len(lines) == 3
    for epoch, line in enumerate(lines):
        assert line.startswith(f"Epoch {epoch}/3: 2 batches in ") and "it/s" in line
        assert f"step {2 * (epoch + 1)}, train_loss=" in line and "val_loss=" in line


def test_progress_bar_draws_tqdm_bars_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    train, val = loaders(n_train=8)
    trainer = make_trainer(tmp_path, enable_progress_bar=True, max_epochs=1, logger=False)
    trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    out = capsys.readouterr().out
    assert "Epoch 0/1: 100%" in out and "2/2" in out and "it/s" in out and "val_loss=" in out
    assert not any(ln.startswith("Epoch 0/1: 2 batches in") for ln in out.splitlines())


def test_learning_rate_monitor_per_epoch_logs_the_rate_of_each_coming_epoch(tmp_path):
    train, val = loaders(n_train=16)
    trainer = make_trainer(tmp_path, callbacks=[LearningRateMonitor("epoch")])
    trainer.fit(make_module(scheduler="step", step_size=3), train_dataloaders=train, val_dataloaders=val)
    _, rows = read_csv(trainer.log_dir)
    logged = [(int(r["step"]), float(r["lr"])) for r in rows if r["lr"]]
    assert [s for s, _ in logged] == [0, 4] and [lr for _, lr in logged] == pytest.approx([0.01, 0.005])


def test_evaluation_bars_show_their_total(monkeypatch):
    """The Trainer counts each evaluation's batches before its hooks run, so the bars know their length."""
    from types import SimpleNamespace

    from callbacks import ProgressBar

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = ProgressBar()
    bar.setup(None, None, "fit")
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, num_val_batches=[3, 2], num_test_batches=[4],
                              num_predict_batches=[float("inf")], num_sanity_val_batches=[1], progress_bar_metrics={})
    for start, end, total in ((bar.on_validation_start, bar.on_validation_end, 5),
                              (bar.on_test_start, bar.on_test_end, 4), (bar.on_predict_start, bar.on_predict_end, None)):
        start(trainer, None)
        assert bar.eval_bar.total == total
        end(trainer, None)


def test_test_right_after_fit_keeps_the_fits_events(tmp_path):
    # fit and test of this toy take about a second: the two writers often open in the same second, and tensorboardX's
    # file name (second + host) alone would let the test's writer truncate the fit's file
    train, val = loaders(n_train=8)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[TensorBoard()])
    trainer.fit(make_module(images=True), train_dataloaders=train, val_dataloaders=val)
    trainer.test(dataloaders=val)
    folder = tmp_path / "msforge_logs" / "version_0"
    assert len([f for f in os.listdir(folder) if ".tfevents." in f]) == 2
    events = read_events(folder)
    assert [im.step for im in events.Images("frames")] == [2]
    assert "train_loss_epoch" in events.Tags()["scalars"] and "test_loss" in events.Tags()["scalars"]
    # the same without the timing: two writers opened back to back in one folder
    callback = TensorBoard(log_dir=str(tmp_path / "back_to_back"))
    for value in (1.0, 2.0):
        callback.on_log_metrics(trainer, None, {"x": value}, 0)
        callback.teardown(trainer, None, "test")
    assert [e.value for e in read_events(tmp_path / "back_to_back").Scalars("x")] == [1.0, 2.0]
