"""Checkpoint files: atomic under SIGKILL, top-k bookkeeping, plain-MindSpore loading, clear errors for bad files."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from toy import ToyModule, loaders, make_module, make_trainer, params_of  # noqa: I001  (toy fixes sys.path first)

import mindspore as ms
from mindspore import Tensor, nn, ops

from callbacks import EarlyStopping, ModelCheckpoint
from msforge import checkpoint as ckpt_io
from msforge.trainer import MisconfigurationError

TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy.py")


def tree(root):
    """Every file under root with its size and modification time: equal snapshots = nothing touched."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def fit(root, module=None, epochs=2, n_train=16, **trainer_kwargs):
    train, val = loaders(n_train=n_train)
    trainer = make_trainer(root, max_epochs=epochs, **trainer_kwargs)
    module = module or make_module()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return trainer, module


# == atomic saves ======================================================================================================
DYING_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import toy
import mindspore

real_save, calls = mindspore.save_checkpoint, [0]

def dying_save(save_obj, ckpt_file_name, *args, **kwargs):
    # the kill lands while the file is half written: write it, cut it in half, die
    calls[0] += 1
    real_save(save_obj, ckpt_file_name, *args, **kwargs)
    if calls[0] == int(os.environ["KILL_ON_SAVE"]):
        with open(ckpt_file_name, "r+b") as f:
            f.truncate(os.path.getsize(ckpt_file_name) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

mindspore.save_checkpoint = dying_save
toy.main(sys.argv[1:])
"""


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable_and_resumable(tmp_path):
    script = tmp_path / "dying_save.py"
    script.write_text(DYING_SAVE.format(tests=os.path.dirname(TOY)))
    root = tmp_path / "run"
    # every step saves epoch=0-step=N.ckpt, then last.ckpt: save call 6 is last.ckpt of step 3
    env = {**os.environ, "KILL_ON_SAVE": "6"}
    proc = subprocess.run([sys.executable, str(script), str(root), "--epochs", "1"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    folder = root / "msforge_logs" / "version_0" / "checkpoints"
    files = sorted(os.listdir(folder))
    assert "last.ckpt" in files and "epoch=0-step=3.ckpt" in files, files
    assert any(re.fullmatch(r"\.last\.ckpt\.tmp-\d+\.ckpt", f) for f in files), files  # the half-written temp file
    _, state = ckpt_io.load(str(folder / "last.ckpt"))  # crc-checked: intact
    assert state["global_step"] == 2 and state["batches_done"] == 2

    resumed = subprocess.run([sys.executable, TOY, str(root), "--epochs", "1", "--ckpt", "last"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "RESUMED step=2 epoch=0 batches=2" in resumed.stdout and "DONE" in resumed.stdout


# == top-k ============================================================================================================
def test_top_k_keeps_exactly_the_k_best_files_and_best_resolves_to_the_best(tmp_path):
    scores = [0.5, 0.3, 0.4, 0.2, 0.6]  # val_loss of epochs 0..4: the two best are epochs 3 and 1
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, filename="{epoch}-{val_loss:.2f}", save_last=True)
    trainer, module = fit(tmp_path, make_module(val_script=scores), epochs=5, n_train=8, callbacks=[checkpoint])
    folder = os.path.dirname(checkpoint.best_model_path)
    assert sorted(os.listdir(folder)) == ["epoch=1-val_loss=0.30.ckpt", "epoch=3-val_loss=0.20.ckpt", "last.ckpt"]
    assert os.path.basename(checkpoint.best_model_path) == "epoch=3-val_loss=0.20.ckpt"
    assert checkpoint.best_model_score == 0.2
    assert sorted(checkpoint.best_k_models.values()) == [0.2, 0.3]
    assert checkpoint.last_model_path == os.path.join(folder, "last.ckpt")
    # the best file holds the weights of epoch 3, not the final ones: "best" loads it
    best_params, best_state = ckpt_io.load(checkpoint.best_model_path)
    assert best_state["epoch"] == 4 and best_state["global_step"] == 8  # saved at the end of epoch 3 (2 batches each)
    final = params_of(trainer)
    assert not np.array_equal(best_params["l1.weight"], final["l1.weight"])
    trainer.validate(module, dataloaders=loaders()[1], ckpt_path="best", verbose=False)
    assert np.array_equal(module.l1.weight.asnumpy(), best_params["l1.weight"])


def test_save_top_k_minus_one_keeps_all_and_max_mode_ranks_upwards(tmp_path):
    checkpoint = ModelCheckpoint(monitor="val_loss", mode="max", save_top_k=-1)
    fit(tmp_path, make_module(val_script=[0.1, 0.3, 0.2]), epochs=3, n_train=8, callbacks=[checkpoint])
    assert sorted(os.listdir(os.path.dirname(checkpoint.best_model_path))) == [
        "epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]
    assert os.path.basename(checkpoint.best_model_path) == "epoch=1-step=4.ckpt" and checkpoint.best_model_score == 0.3


def test_decisions_and_names_without_a_trainer(tmp_path):
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=2, dirpath=str(tmp_path))
    assert cb.top_k_decision(1.0)[0]  # nothing kept yet
    cb.best_k_models = {"a": 0.5, "b": 0.7}
    assert cb.top_k_decision(0.6) == (True, "val_loss=0.6 is better than the worst kept (0.7)")
    assert not cb.top_k_decision(0.8)[0] and not cb.top_k_decision(float("nan"))[0]
    assert cb.format_checkpoint_name({"epoch": 3, "val_loss": 0.123456}, "{epoch:02d}-{val_loss:.4f}") == \
        "epoch=03-val_loss=0.1235.ckpt"
    plain = ModelCheckpoint(filename="{epoch:02d}-{val_loss:.4f}", auto_insert_metric_name=False)
    assert plain.format_checkpoint_name({"epoch": 3, "val_loss": 0.5}) == "03-0.5000.ckpt"
    assert plain.format_checkpoint_name({"epoch": 3}) == "03-0.0000.ckpt"  # not logged yet: 0, as Lightning
    steps = ModelCheckpoint(every_n_train_steps=3)
    assert steps.step_save_due(6, True, None)[0] and not steps.step_save_due(7, True, None)[0]
    assert not steps.step_save_due(6, False, None)[0]  # accumulating: no update in this batch
    timed = ModelCheckpoint(train_time_interval=60)
    assert timed.step_save_due(1, True, 61.0)[0] and not timed.step_save_due(1, True, 59.0)[0]
    assert ModelCheckpoint().epoch_save_due(0)[0] and not ModelCheckpoint(every_n_epochs=2).epoch_save_due(0)[0]
    for bad in (dict(mode="best"), dict(save_top_k=2), dict(every_n_train_steps=2, every_n_epochs=1)):
        with pytest.raises(MisconfigurationError):
            ModelCheckpoint(**bad)


def test_missing_monitor_is_a_one_line_error_naming_the_logged_metrics(tmp_path):
    with pytest.raises(MisconfigurationError) as err:
        fit(tmp_path, epochs=1, n_train=8, callbacks=[ModelCheckpoint(monitor="val_acc")])
    message = str(err.value)
    assert "\n" not in message and "'val_acc'" in message and "'val_loss'" in message and "'train_loss'" in message


def test_a_step_checkpoint_waits_for_the_mid_epoch_validation_that_follows_its_batch(tmp_path):
    # 4 batches per epoch; validation after batch 2 (val_check_interval=2) and at each epoch end
    es = EarlyStopping("val_loss", patience=100)
    checkpoint = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1)
    fit(tmp_path, make_module(val_script=[0.5, 0.4, 0.3, 0.2]), n_train=16, val_check_interval=2,
        callbacks=[es, checkpoint])
    folder = os.path.dirname(checkpoint.best_model_path)
    names = ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=8.ckpt"]
    assert sorted(os.listdir(folder)) == names
    states = [ckpt_io.load(os.path.join(folder, name))[1] for name in names]
    # steps 2 and 6: saved after the validation that followed the batch (resuming never skips it);
    # steps 4 and 8: saved before the epoch-end validation, which a resumed run runs again
    assert [s["callbacks"][es.state_key]["last_value"] for s in states] == [0.5, 0.5, 0.3, 0.3]
    assert [(s["epoch"], s["batches_done"]) for s in states] == [(0, 2), (0, 4), (1, 2), (1, 4)]


def test_without_validation_data_deferred_step_checkpoints_are_still_saved(tmp_path):
    checkpoint = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1)
    trainer = make_trainer(tmp_path, val_check_interval=2, callbacks=[checkpoint])
    trainer.fit(make_module(), train_dataloaders=loaders(n_train=16)[0])
    assert sorted(os.listdir(os.path.dirname(checkpoint.best_model_path))) == [
        "epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=8.ckpt"]


class FailsInSecondValidation(ToyModule):
    def validation_step(self, batch, batch_idx):
        if self.val_runs == 1:
            raise RuntimeError("disk full")
        super().validation_step(batch, batch_idx)


def test_save_on_exception_writes_a_resumable_checkpoint(tmp_path):
    checkpoint = ModelCheckpoint(save_on_exception=True, save_top_k=0)
    with pytest.raises(RuntimeError, match="disk full"):
        fit(tmp_path, FailsInSecondValidation(), epochs=3, n_train=8, callbacks=[checkpoint])
    folder = tmp_path / "msforge_logs" / "version_0" / "checkpoints"
    assert os.listdir(folder) == ["exception-epoch=1-step=4.ckpt"]
    _, state = ckpt_io.load(str(folder / "exception-epoch=1-step=4.ckpt"))
    assert state["global_step"] == 4 and not state["weights_only"]


# == plain MindSpore can read the files ================================================================================
class Bare(nn.Cell):
    """The same network written without msforge: same attribute names, so the same parameter names."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Dense(4, 8)
        self.l2 = nn.Dense(8, 1)

    def construct(self, x):
        return self.l2(ops.tanh(self.l1(x)))


@pytest.mark.parametrize("weights_only", [False, True])
def test_checkpoint_loads_with_plain_mindspore_into_the_bare_network(tmp_path, weights_only):
    checkpoint = ModelCheckpoint(save_weights_only=weights_only)
    _, module = fit(tmp_path, epochs=1, n_train=8, callbacks=[checkpoint])
    ms.set_seed(123)
    bare = Bare()
    not_loaded, _ = ms.load_param_into_net(bare, ms.load_checkpoint(checkpoint.best_model_path))
    assert not_loaded == []
    x = Tensor(np.random.default_rng(5).normal(size=(4, 4)).astype(np.float32))
    module.set_train(False)
    assert np.array_equal(bare(x).asnumpy(), module(x).asnumpy())
    if weights_only:  # such a file cannot resume training, and says so
        with pytest.raises(MisconfigurationError, match="weights only"):
            fit_from(tmp_path, checkpoint.best_model_path)


# == bad files =========================================================================================================
class OtherNames(ToyModule):
    """A different model: its layers have other names."""

    def __init__(self):
        super().__init__()
        del self.l1, self.l2
        self.enc = nn.Dense(4, 8)
        self.dec = nn.Dense(8, 1)

    def construct(self, x):
        return self.dec(ops.tanh(self.enc(x)))


def fit_from(root, path, module=None):
    train, val = loaders(n_train=8)
    trainer = make_trainer(root, max_epochs=2)
    trainer.fit(module or make_module(), train_dataloaders=train, val_dataloaders=val, ckpt_path=path)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished run; tests copy its last.ckpt and damage the copy."""
    root = tmp_path_factory.mktemp("saved")
    fit(root, epochs=1, n_train=8, callbacks=[ModelCheckpoint(save_last=True)])
    return root, str(root / "msforge_logs" / "version_0" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("damage", ["flip_middle_byte", "truncate", "missing"])
def test_corrupt_checkpoints_give_one_line_errors_and_touch_nothing(saved_run, damage, tmp_path):
    root, last = saved_run
    data = bytearray(open(last, "rb").read())
    bad = str(tmp_path / "bad.ckpt")
    if damage == "flip_middle_byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) * 2 // 3]
    if damage != "missing":
        open(bad, "wb").write(bytes(data))
    before = tree(root)
    with pytest.raises(MisconfigurationError) as err:
        fit_from(root, bad)
    message = str(err.value)
    assert "\n" not in message and repr(bad) in message
    assert ("does not exist" if damage == "missing" else "truncated or corrupted") in message
    assert tree(root) == before  # no new version folder, the earlier checkpoints untouched


@pytest.mark.parametrize("foreign", ["other_shapes", "other_names"])
def test_checkpoint_of_another_model_names_the_first_mismatched_parameters(saved_run, foreign):
    root, last = saved_run
    module = make_module(hidden=16) if foreign == "other_shapes" else OtherNames()
    before = tree(root)
    with pytest.raises(MisconfigurationError) as err:
        fit_from(root, last, module)
    message = str(err.value)
    assert "\n" not in message and repr(last) in message and "does not match this model" in message
    if foreign == "other_shapes":
        assert "'l1.weight' has shape (8, 4) in the file but (16, 4) in the model" in message
    else:
        assert "missing 'enc.weight', 'enc.bias', 'dec.weight'" in message
    assert tree(root) == before


def test_best_without_a_best_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MisconfigurationError, match="ckpt_path='best': there is no best checkpoint"):
        make_trainer(tmp_path).validate(make_module(), dataloaders=loaders()[1], ckpt_path="best")
    # checkpoints exist, but none is ranked: last.ckpt is there, "best" still has nothing to point at
    fit(tmp_path, epochs=1, n_train=8, callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=0, save_last=True)])
    with pytest.raises(MisconfigurationError, match="ckpt_path='best': there is no best checkpoint"):
        make_trainer(tmp_path).validate(make_module(), dataloaders=loaders()[1], ckpt_path="best")
