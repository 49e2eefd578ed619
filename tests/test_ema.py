"""EMAWeightAveraging on the toy model, trained for real: the average's values against numpy's, what validation and
checkpoints see, exact resume, and resuming from a checkpoint saved without it."""
import numpy as np
import pytest

from callbacks import EMAWeightAveraging, ModelCheckpoint
from msforge import Callback, MisconfigurationError
from msforge import checkpoint as ckpt_io
from toy import loaders, make_module, make_trainer

pytestmark = pytest.mark.usefixtures("graph_mode")


def weights(module):
    return {p.name: p.asnumpy().copy() for p in module.trainable_params()}


class Recorder(Callback):
    """The raw weights after every optimizer step, and the weights validation runs with (by step)."""

    def __init__(self):
        self.raw, self.validated = {}, {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.raw[trainer.global_step] = weights(module)

    def on_validation_epoch_start(self, trainer, module):
        if not trainer.sanity_checking:
            self.validated[trainer.global_step] = weights(module)


class AfterEMA(Recorder):
    order = 50  # sees validation after the EMA callback (order 0) swapped the average in


def expected_average(raw, decay, steps):
    """numpy's EMA of the raw weights over ``steps`` (the first copies), in float32 as the graph computes it."""
    average = None
    for step in steps:
        if average is None:
            average = {k: v.copy() for k, v in raw[step].items()}
        else:
            average = {k: (average[k] * np.float32(decay) + raw[step][k] * np.float32(1 - decay)) for k in average}
    return average


def assert_close(got, expected):
    assert sorted(got) == sorted(expected)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("every, start", [(1, None), (2, 3)])
def test_the_average_validation_and_the_module_after_fit_hold_numpys_ema(tmp_path, every, start):
    train, val = loaders()  # 8 batches an epoch, validation at each epoch end
    recorder, seen = Recorder(), AfterEMA()
    ema = EMAWeightAveraging(decay=0.8, update_every_n_steps=every, update_starting_at_step=start)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[recorder, ema, seen], enable_checkpointing=False)
    module = make_module()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    updates = [s for s in range(1, 17) if (start is None or s >= start) and s % every == 0]
    assert ema.n_averaged == len(updates)
    assert_close(weights(module), expected_average(recorder.raw, 0.8, updates))  # fit ends with the average
    assert sorted(seen.validated) == [8, 16]
    assert_close(seen.validated[8], expected_average(recorder.raw, 0.8, [s for s in updates if s <= 8]))
    # training went on with the raw weights: the update after a validation started from step 8's raw weights
    assert not all(np.array_equal(recorder.raw[8][k], seen.validated[8][k]) for k in recorder.raw[8])


def test_checkpoints_hold_the_average_under_the_weights_names_and_the_raw_weights_beside(tmp_path):
    train, val = loaders()
    recorder = Recorder()
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[recorder, EMAWeightAveraging(decay=0.7),
                                                              ModelCheckpoint(save_last=True)])
    module = make_module()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    params, state = ckpt_io.load(trainer.checkpoint_callback.last_model_path)
    averaged = expected_average(recorder.raw, 0.7, range(1, 17))
    assert_close({k: params[k] for k in averaged}, averaged)
    assert_close({k: params["ema_raw." + k] for k in averaged}, recorder.raw[16])
    assert state["callbacks"]["EMAWeightAveraging"] == {"n_averaged": 16}
    fresh = make_module(seed=5)  # testing from the file evaluates the averaged weights
    last = trainer.checkpoint_callback.last_model_path
    make_trainer(tmp_path, logger=False).test(fresh, dataloaders=val, ckpt_path=last, verbose=False)
    assert_close(weights(fresh), averaged)


def test_resume_continues_the_average_and_the_raw_weights_exactly(tmp_path):
    train, val = loaders()
    whole = make_trainer(tmp_path / "whole", max_epochs=3, callbacks=[EMAWeightAveraging(decay=0.9)],
                         enable_checkpointing=False, logger=False)
    whole_module = make_module()
    whole.fit(whole_module, train_dataloaders=train, val_dataloaders=val)

    first = make_trainer(tmp_path / "cut", max_epochs=1, logger=False,
                         callbacks=[EMAWeightAveraging(decay=0.9), ModelCheckpoint(save_last=True)])
    first.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    ema = EMAWeightAveraging(decay=0.9)
    second = make_trainer(tmp_path / "cut", max_epochs=3, logger=False,
                          callbacks=[ema, ModelCheckpoint(save_last=True)])
    module = make_module(seed=3)
    second.fit(module, train_dataloaders=train, val_dataloaders=val,
               ckpt_path=first.checkpoint_callback.last_model_path)
    assert ema.n_averaged == 24
    for name, value in weights(whole_module).items():
        assert np.array_equal(value, weights(module)[name]), name
    optimizer = {n: p.asnumpy() for n, p in whole._checkpoint_params()}
    for name, p in second._checkpoint_params():
        assert np.array_equal(optimizer[name], p.asnumpy()), name


def test_resuming_a_checkpoint_saved_without_it_starts_the_average_from_the_files_weights(tmp_path):
    train, val = loaders()
    first = make_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[ModelCheckpoint(save_last=True)])
    first.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
    saved, _ = ckpt_io.load(first.checkpoint_callback.last_model_path)

    class AtStart(Callback):
        def on_train_start(self, trainer, module):
            self.weights = weights(module)

    at_start, ema = AtStart(), EMAWeightAveraging(decay=0.5)
    second = make_trainer(tmp_path, max_epochs=2, logger=False,
                          callbacks=[ema, at_start, ModelCheckpoint(save_last=True)])
    second.fit(make_module(seed=9), train_dataloaders=train, val_dataloaders=val,
               ckpt_path=first.checkpoint_callback.last_model_path)
    assert_close(at_start.weights, {k: saved[k] for k in at_start.weights})
    assert ema.n_averaged == 8


@pytest.mark.parametrize("kwargs, message", [
    ({"decay": 1.5}, r"EMAWeightAveraging\(decay=1.5\): use a number in \[0, 1\]"),
    ({"update_every_n_steps": 0}, r"EMAWeightAveraging\(update_every_n_steps=0\): use an int >= 1"),
    ({"update_starting_at_step": -1}, r"EMAWeightAveraging\(update_starting_at_step=-1\): use an int >= 0"),
])
def test_bad_arguments_are_one_line_errors_naming_the_value(kwargs, message):
    with pytest.raises(MisconfigurationError, match=message):
        EMAWeightAveraging(**kwargs)
