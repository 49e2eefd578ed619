"""EarlyStopping: the decision alone, then real fits whose validation reports scripted val_loss values."""
import math
import os

import pytest

from toy import loaders, make_module, make_trainer  # noqa: I001  (toy fixes sys.path first)

from callbacks import EarlyStopping, ModelCheckpoint
from msforge.trainer import MisconfigurationError

NAN = float("nan")


# == evaluate() without a Trainer =====================================================================================
def test_evaluate_counts_patience_with_min_delta():
    es = EarlyStopping("val_loss", patience=2, min_delta=0.1)
    assert es.evaluate(1.0) == (False, "Metric val_loss improved. New best score: 1")
    assert es.evaluate(0.95)[0] is False and es.wait_count == 1  # better, but by less than min_delta
    assert es.evaluate(0.8) == (False, "Metric val_loss improved by 0.2. New best score: 0.8")
    assert es.wait_count == 0
    assert es.evaluate(0.85)[0] is False
    stop, reason = es.evaluate(0.79)
    assert stop and reason == ("Monitored metric val_loss did not improve in the last 2 records. Best score: 0.8. "
                               "Signaling Trainer to stop.")


def test_evaluate_max_mode_non_finite_and_thresholds():
    es = EarlyStopping("acc", mode="max", patience=5, stopping_threshold=0.9, divergence_threshold=0.1)
    assert es.evaluate(0.5)[0] is False and es.best_score == 0.5
    assert es.evaluate(0.6)[0] is False and es.best_score == 0.6
    assert es.evaluate(0.95) == (True, "Stopping threshold reached: acc = 0.95 > 0.9. Signaling Trainer to stop.")
    assert es.evaluate(0.05) == (True, "Divergence threshold reached: acc = 0.05 < 0.1. Signaling Trainer to stop.")
    stop, reason = es.evaluate(NAN)
    assert stop and reason.startswith("Monitored metric acc = nan is not finite. Previous best value was 0.6")
    assert EarlyStopping("acc", check_finite=False).evaluate(math.inf) == (
        False, "Metric acc=inf did not improve (1/3 checks)")


def test_state_round_trip_and_bad_arguments():
    es = EarlyStopping("val_loss", patience=3)
    for v in (1.0, 1.1, 1.2):
        es.evaluate(v)
    other = EarlyStopping("val_loss", patience=3)
    other.load_state_dict(es.state_dict())
    assert other.wait_count == 2 and other.best_score == 1.0
    assert other.evaluate(1.3)[0] is True  # the third check without improvement
    for bad in (dict(mode="lowest"), dict(patience=0)):
        with pytest.raises(MisconfigurationError):
            EarlyStopping("val_loss", **bad)


# == in a real fit =====================================================================================================
def fit(root, scores, max_epochs=10, ckpt_path=None, **es_kwargs):
    es = EarlyStopping("val_loss", **es_kwargs)
    train, val = loaders(n_train=8)
    trainer = make_trainer(root, max_epochs=max_epochs, callbacks=[es, ModelCheckpoint(save_last=True)])
    trainer.fit(make_module(val_script=scores), train_dataloaders=train, val_dataloaders=val, ckpt_path=ckpt_path)
    return trainer, es


def test_stops_on_patience_and_prints_the_reason(tmp_path, capsys):
    trainer, es = fit(tmp_path, [1.0, 0.9, 0.95, 0.92, 0.91], patience=3)
    assert es.stopped_epoch == 4 and trainer.current_epoch == 5 and trainer.global_step == 10
    assert "EarlyStopping: Monitored metric val_loss did not improve in the last 3 records" in capsys.readouterr().out


@pytest.mark.parametrize("scores, kwargs, stop_epoch, reason", [
    ([1.0, 0.8, NAN], {}, 2, "Monitored metric val_loss = nan is not finite"),
    ([1.0, 0.5, 0.05], {"stopping_threshold": 0.1}, 2, "Stopping threshold reached: val_loss = 0.05 < 0.1"),
    ([1.0, 7.0], {"divergence_threshold": 5.0}, 1, "Divergence threshold reached: val_loss = 7 > 5"),
])
def test_stops_at_once_on_nan_and_thresholds(tmp_path, capsys, scores, kwargs, stop_epoch, reason):
    trainer, es = fit(tmp_path, scores, patience=100, **kwargs)
    assert es.stopped_epoch == stop_epoch and trainer.current_epoch == stop_epoch + 1
    assert es.stopping_reason.startswith(reason) and reason in capsys.readouterr().out


def test_patience_counts_validation_checks_and_stops_mid_epoch(tmp_path):
    es = EarlyStopping("val_loss", patience=2)  # validation after batch 2 and at the end of each 4-batch epoch
    train, val = loaders(n_train=16)
    trainer = make_trainer(tmp_path, max_epochs=10, val_check_interval=2, callbacks=[es])
    trainer.fit(make_module(val_script=[1.0, 1.1, 1.2]), train_dataloaders=train, val_dataloaders=val)
    assert trainer.global_step == 6 and es.stopped_epoch == 1  # 3rd validation: after batch 2 of epoch 1


def test_missing_monitor_is_an_error_when_strict_and_a_warning_when_not(tmp_path):
    train, val = loaders(n_train=8)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[EarlyStopping("val_acc")])
    with pytest.raises(MisconfigurationError) as err:
        trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    assert "\n" not in str(err.value) and "'val_acc'" in str(err.value) and "'val_loss'" in str(err.value)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[EarlyStopping("val_acc", strict=False)])
    with pytest.warns(UserWarning, match="val_acc"):
        trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    assert trainer.current_epoch == 2


def test_a_resumed_run_continues_the_patience_count(tmp_path):
    # run 1: improvement, improvement, one bad check -> wait_count 1 when it ends after 3 epochs
    _, first = fit(tmp_path, [1.0, 0.9, 0.95], max_epochs=3, patience=3)
    assert first.wait_count == 1 and first.stopping_reason is None
    last = os.path.join(tmp_path, "msforge_logs", "version_0", "checkpoints", "last.ckpt")
    # run 2 (new process state: new callback, new module) sees 0.95 again and again: bad checks 2 and 3 -> stops at
    # its 2nd epoch (epoch 4). Without the saved state it would take 0.95 as a first best and run 3 more epochs.
    trainer, es = fit(tmp_path, [0.95] * 10, ckpt_path=last, patience=3)
    assert es.stopped_epoch == 4 and trainer.current_epoch == 5 and es.best_score == 0.9


def test_resuming_a_stopped_run_does_not_train_unless_the_arguments_allow_it(tmp_path, capsys):
    trainer, _ = fit(tmp_path, [1.0, 1.1], patience=1)
    assert trainer.global_step == 4
    last = os.path.join(tmp_path, "msforge_logs", "version_0", "checkpoints", "last.ckpt")
    capsys.readouterr()
    again, _ = fit(tmp_path, [1.1] * 10, ckpt_path=last, patience=1)
    assert again.global_step == 4 and "not training further" in capsys.readouterr().err
    more, es = fit(tmp_path, [1.2, 0.5, 0.6], max_epochs=5, ckpt_path=last, patience=3)  # more patience: it trains
    assert more.global_step == 10 and es.wait_count == 1 and es.best_score == 0.5 and es.stopping_reason is None
