"""The Trainer and its compiled step, on real MindSpore (CPU, graph mode unless said otherwise)."""
import time
import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

import msforge
from msforge import DataLoader, Module, Trainer, layers
from msforge.trainer import MisconfigurationError


class Regression(Module):
    """y = x @ w: a linear model whose loss can fall to ~0."""

    def __init__(self, lr=0.05, optimizer="adam", in_features=8):
        super().__init__()
        self.save_hyperparameters()
        self.fc = nn.Dense(in_features, 1, weight_init="zeros", bias_init="zeros")

    def construct(self, x):
        return self.fc(x)

    def training_step(self, batch):
        x, y = batch
        pred = self.construct(x)
        return {"loss": ((pred - y) ** 2).mean(), "mae": ops.abs(pred - y).mean()}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", float(((self(x).asnumpy() - y.asnumpy()) ** 2).mean()), prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mae", float(np.abs(self(x).asnumpy() - y.asnumpy()).mean()))

    def configure_optimizers(self):
        if self.hparams.optimizer == "sgd":
            return nn.SGD(self.trainable_params(), learning_rate=self.hparams.lr)
        return nn.Adam(self.trainable_params(), learning_rate=self.hparams.lr)


class LinearData:
    def __init__(self, n=256, seed=0, in_features=8):
        rng = np.random.default_rng(seed)
        w = np.random.default_rng(123).normal(size=(in_features, 1))
        self.x = rng.normal(size=(n, in_features)).astype(np.float32)
        self.y = (self.x @ w).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def quiet(**kwargs):
    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, **kwargs)


def loaders(n=256, batch=32, shuffle=True):
    return DataLoader(LinearData(n), batch, shuffle=shuffle), DataLoader(LinearData(64, seed=1), 32)


def test_regression_loss_falls_by_more_than_90_percent():
    train, val = loaders()
    trainer = quiet(max_epochs=8, num_sanity_val_steps=0)
    model = Regression()
    first = trainer.validate(model, val, verbose=False)[0]["val_loss"]
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    last = trainer.callback_metrics["val_loss"]
    assert last < 0.1 * first, (first, last)
    assert trainer.global_step == 8 * 8 and trainer.current_epoch == 8
    assert set(trainer.callback_metrics) >= {"train_loss", "train_mae", "train_loss_epoch", "train_mae_epoch"}


HOOKS = ["setup", "on_fit_start", "on_sanity_check_start", "on_validation_start", "on_validation_epoch_start",
         "on_validation_batch_start", "on_validation_batch_end", "on_validation_epoch_end", "on_validation_end",
         "on_sanity_check_end", "on_train_start", "on_train_epoch_start", "on_train_batch_start",
         "on_before_optimizer_step", "on_train_batch_end", "on_train_epoch_end", "on_train_end", "on_fit_end",
         "teardown", "on_test_start", "on_test_epoch_start", "on_test_batch_start", "on_test_batch_end",
         "on_test_epoch_end", "on_test_end", "on_predict_start", "on_predict_epoch_start",
         "on_predict_batch_start", "on_predict_batch_end", "on_predict_epoch_end", "on_predict_end"]
CALLBACK_ONLY = {"on_sanity_check_start", "on_sanity_check_end"}


def test_hook_order_matches_the_documented_list():
    calls = []

    class Recorder(msforge.Callback):
        pass

    class Recorded(Regression):
        pass

    for hook in HOOKS:
        setattr(Recorder, hook, lambda self, trainer, module, *a, _h=hook: calls.append(("callback", _h)))
        if hook not in CALLBACK_ONLY:
            setattr(Recorded, hook, lambda self, *a, _h=hook: calls.append(("module", _h)))
    train, val = DataLoader(LinearData(64), 32), DataLoader(LinearData(32), 32)
    trainer = quiet(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1,
                    callbacks=[Recorder()])
    model = Recorded()
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    trainer.test(model, val, verbose=False)
    trainer.predict(model, DataLoader(LinearData(32), 32))

    def both(hook):
        return [("callback", hook)] + ([] if hook in CALLBACK_ONLY else [("module", hook)])

    val_run = ["on_validation_start", "on_validation_epoch_start", "on_validation_batch_start",
               "on_validation_batch_end", "on_validation_epoch_end", "on_validation_end"]
    fit = (["setup", "on_fit_start", "on_sanity_check_start"] + val_run + ["on_sanity_check_end", "on_train_start",
           "on_train_epoch_start", "on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end"]
           + val_run + ["on_train_epoch_end", "on_train_end", "on_fit_end", "teardown"])
    test = ["setup", "on_test_start", "on_test_epoch_start", "on_test_batch_start", "on_test_batch_end",
            "on_test_epoch_end", "on_test_end", "teardown"]
    predict = ["setup", "on_predict_start", "on_predict_epoch_start", "on_predict_batch_start",
               "on_predict_batch_end", "on_predict_epoch_end", "on_predict_end", "teardown"]
    expected = [c for hook in fit + test + predict for c in both(hook)]
    assert calls == expected


def _one_batch(seed=0, n=16, in_features=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, in_features)).astype(np.float32), rng.normal(size=(n, 1)).astype(np.float32)


def _linear_grads(w, b, x, y):
    """Gradients of mean((x @ w.T + b - y)^2) with respect to w (1, f) and b (1,)."""
    err = x @ w.T + b - y
    return 2 * (err * x).mean(0, keepdims=True), 2 * err.mean(0)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_matches_numpy(algorithm):
    x, y = _one_batch()
    model = Regression(lr=1.0, optimizer="sgd", in_features=4)
    w0 = np.random.default_rng(5).normal(size=(1, 4)).astype(np.float32)
    ops.assign(model.fc.weight, Tensor(w0))
    trainer = quiet(max_steps=1, num_sanity_val_steps=0, gradient_clip_val=0.1, gradient_clip_algorithm=algorithm)
    trainer.fit(model, train_dataloaders=[(x, y)])
    gw, gb = _linear_grads(w0.astype(np.float64), 0.0, x.astype(np.float64), y.astype(np.float64))
    if algorithm == "norm":
        norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
        gw, gb = gw * min(1.0, 0.1 / norm), gb * min(1.0, 0.1 / norm)
        assert norm > 0.1  # the test only means something if clipping was active
    else:
        assert np.abs(gw).max() > 0.1
        gw, gb = np.clip(gw, -0.1, 0.1), np.clip(gb, -0.1, 0.1)
    np.testing.assert_allclose(model.fc.weight.asnumpy(), w0 - gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.fc.bias.asnumpy(), -gb, rtol=1e-5, atol=1e-6)


def test_accumulating_four_micro_batches_equals_one_big_batch():
    x, y = _one_batch(n=32)
    micro = [(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]) for i in range(4)]
    results = []
    for batches, k in ((micro * 3, 4), ([(x, y)] * 3, 1)):
        model = Regression(lr=0.1, optimizer="sgd", in_features=4)
        trainer = quiet(max_epochs=1, num_sanity_val_steps=0, accumulate_grad_batches=k)
        trainer.fit(model, train_dataloaders=batches)
        assert trainer.global_step == 3  # optimizer updates, not batches
        results.append(np.concatenate([model.fc.weight.asnumpy().ravel(), model.fc.bias.asnumpy()]))
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)
    assert np.abs(results[1]).max() > 1e-3


class InjectInf(msforge.Callback):
    """Feeds an inf target on chosen batches, so that step's gradients are not finite."""

    def __init__(self, bad_batches):
        self.bad = set(bad_batches)
        self.scales, self.weights = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.scales.append(trainer.loss_scale_value)
        self.weights.append(module.fc.weight.asnumpy().copy())


def test_inf_gradient_skips_the_step_and_dynamic_scale_halves_then_doubles():
    x, y = _one_batch(n=8)
    bad_y = y.copy()
    bad_y[0] = np.inf
    batches = [(x, y), (x, bad_y), (x, y), (x, y), (x, y), (x, y)]
    recorder = InjectInf([1])
    model = Regression(lr=0.01, optimizer="adam", in_features=4)
    trainer = quiet(max_epochs=1, num_sanity_val_steps=0, callbacks=[recorder],
                    loss_scale={"init": 1024.0, "factor": 2.0, "window": 2})
    trainer.fit(model, train_dataloaders=batches)
    s = recorder.scales
    # window 2: the scale doubles after two clean updates; the inf step halves it and its update is skipped
    assert s == [1024.0, 512.0, 512.0, 1024.0, 1024.0, 2048.0]
    np.testing.assert_array_equal(recorder.weights[1], recorder.weights[0])  # skipped: weights unchanged
    assert not np.array_equal(recorder.weights[2], recorder.weights[1])
    assert trainer.skipped_steps == 1 and trainer.global_step == 6
    assert trainer.logged_metrics.get("skipped_steps", 1.0) == 1.0


def test_static_loss_scale_trains_like_no_scale():
    x, y = _one_batch(n=16)
    out = []
    for scale in (None, 128.0):
        model = Regression(lr=0.1, optimizer="sgd", in_features=4)
        quiet(max_epochs=1, num_sanity_val_steps=0, loss_scale=scale).fit(model, train_dataloaders=[(x, y)] * 3)
        out.append(model.fc.weight.asnumpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5)


def test_mixed_precision_16_trains_on_cpu():
    train, _ = loaders(n=128)
    model = Regression(lr=0.05)
    trainer = quiet(max_epochs=4, num_sanity_val_steps=0, precision="16-mixed", loss_scale="dynamic")
    trainer.fit(model, train_dataloaders=train)
    history = trainer.callback_metrics
    assert np.isfinite(history["train_loss_epoch"])
    assert model.fc.weight.dtype == ms.float32  # master weights stay float32


def test_bf16_mixed_without_bfloat16_kernels_trains_in_float32_with_one_warning():
    from msforge.trainer import bf16_kernels

    if bf16_kernels(ms.get_context("device_target")):
        pytest.skip("this backend has bfloat16 kernels: bf16-mixed runs in bfloat16 here")
    weights = []
    for precision in ("32", "bf16-mixed"):
        ms.set_seed(0)
        model = Regression(lr=0.05)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet(max_epochs=2, num_sanity_val_steps=0, precision=precision).fit(
                model, train_dataloaders=loaders(n=128, shuffle=False)[0])
        notes = [str(w.message) for w in caught if "bf16-mixed" in str(w.message)]
        assert len(notes) == (precision == "bf16-mixed"), notes
        weights.append(model.fc.weight.asnumpy())
    assert "no bfloat16 MatMul/Conv2D kernels" in notes[0] and "training in float32" in notes[0]
    assert "the model has no msforge.layers.Conv2d" in notes[0]
    np.testing.assert_array_equal(weights[0], weights[1])


class ConvRegression(Module):
    """A 3x3 msforge.layers.Conv2d over 1-channel 8x8 images, mean-pooled to one number: a model with a convolution
    msforge's kernel runs."""

    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2d(1, 8, 3, pad_mode="pad", padding=1, has_bias=True, weight_init="ones")

    def construct(self, x):
        return self.conv(x).mean(axis=(1, 2, 3)).reshape(-1, 1)

    def training_step(self, batch):
        x, y = batch
        return ((self.construct(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=0.01)


def test_bf16_mixed_on_cpu_multiplies_msforge_convolutions_in_bfloat16_without_a_warning():
    if not layers.bfloat16_convolutions():
        pytest.skip("no bfloat16 convolution kernels here (the CPU needs AVX512_BF16)")
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = x.mean(axis=(1, 2, 3)).reshape(-1, 1) * 3.0

    class Images:
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], y[i]
    results = {}
    for precision in ("32", "bf16-mixed"):
        ms.set_seed(0)
        model = ConvRegression()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = quiet(max_epochs=5, num_sanity_val_steps=0, precision=precision)
            trainer.fit(model, train_dataloaders=DataLoader(Images(), 16))
        assert not [w for w in caught if "bf16-mixed" in str(w.message)]
        assert model.conv.bfloat16 == (precision == "bf16-mixed") and model.conv.weight.dtype == ms.float32
        results[precision] = (model.conv.weight.asnumpy(), trainer.callback_metrics["train_loss_epoch"])
    (w32, loss32), (w16, loss16) = results["32"], results["bf16-mixed"]
    assert not np.array_equal(w32, w16)  # the multiplications did round to bfloat16
    np.testing.assert_allclose(w16, w32, atol=0.02)
    assert abs(loss16 - loss32) <= 0.05 * loss32 + 1e-4, (loss32, loss16)


class ConvRegressionTested(ConvRegression):
    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mse", float(((self.construct(x).asnumpy() - y.asnumpy()) ** 2).mean()))


def test_bf16_mixed_tests_in_bfloat16_in_a_new_trainer_as_after_fit(tmp_path):
    """`run.py --stage test --ckpt` in a new process must give the digits of the test that followed the fit."""
    if not layers.bfloat16_convolutions():
        pytest.skip("no bfloat16 convolution kernels here (the CPU needs AVX512_BF16)")
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    data = list(zip(x, x.mean(axis=(1, 2, 3)).reshape(-1, 1) * 3.0))
    ms.set_seed(0)
    model = ConvRegressionTested()
    trainer = quiet(max_epochs=3, num_sanity_val_steps=0, precision="bf16-mixed")
    trainer.fit(model, train_dataloaders=DataLoader(data, 16))
    path = str(tmp_path / "w.ckpt")
    trainer.save_checkpoint(path)
    [after_fit] = trainer.test(model, DataLoader(data, 16), verbose=False)
    fresh = {}
    for precision in ("bf16-mixed", "32"):
        [fresh[precision]] = quiet(precision=precision).test(ConvRegressionTested(), DataLoader(data, 16),
                                                             ckpt_path=path, verbose=False)
    assert fresh["bf16-mixed"]["test_mse"] == after_fit["test_mse"], (after_fit, fresh)
    assert fresh["32"]["test_mse"] != after_fit["test_mse"]  # float32 convolutions do give other digits
    # the fitted model itself under a float32 Trainer computes in float32, then in bfloat16 again
    [again] = quiet(precision="32").test(model, DataLoader(data, 16), verbose=False)
    assert again["test_mse"] == fresh["32"]["test_mse"] and not model.conv.bfloat16
    [again] = quiet(precision="bf16-mixed").test(model, DataLoader(data, 16), verbose=False)
    assert again["test_mse"] == after_fit["test_mse"]


def test_a_model_cast_to_float16_refuses_a_trainer_of_another_precision():
    data = [(np.ones((1, 8, 8), np.float32), np.ones(1, np.float32))] * 16
    model = ConvRegressionTested()
    quiet(max_steps=1, num_sanity_val_steps=0, precision="16-mixed").fit(model, train_dataloaders=DataLoader(data, 16))
    with pytest.raises(MisconfigurationError, match=r"^precision='32': this model was cast to Float16 for an earlier "
                                                    r"Trainer's precision='16-mixed'"):
        quiet(precision="32").test(model, DataLoader(data, 16), verbose=False)


def test_bf16_mixed_where_the_convolutions_cannot_use_bfloat16_warns_once_naming_why():
    why = layers.bfloat16_convolutions_missing()
    if why is None:
        pytest.skip("bfloat16 convolution kernels here: bf16-mixed multiplies in bfloat16 without a warning")
    x = np.ones((16, 1, 8, 8), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet(max_epochs=1, num_sanity_val_steps=0, precision="bf16-mixed").fit(
            ConvRegression(), train_dataloaders=DataLoader(list(zip(x, x.mean(axis=(1, 2, 3)).reshape(-1, 1))), 16))
    notes = [str(w.message) for w in caught if "bf16-mixed" in str(w.message)]
    assert len(notes) == 1 and why in notes[0] and "training in float32" in notes[0], notes
    assert "the model has no msforge.layers.Conv2d" not in notes[0] and "\n" not in notes[0]


def test_fast_dev_run_limits_max_steps_and_overfit_batches():
    train, val = loaders(n=256)
    t = quiet(fast_dev_run=True)
    t.fit(Regression(), train_dataloaders=train, val_dataloaders=val)
    assert t.global_step == 1 and t.current_epoch == 1

    t = quiet(max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    t.fit(Regression(), train_dataloaders=train, val_dataloaders=val)
    assert t.global_step == 6

    t = quiet(max_epochs=3, limit_train_batches=0.5, num_sanity_val_steps=0)
    t.fit(Regression(), train_dataloaders=train)
    assert t.global_step == 12  # half of 8 batches, 3 epochs

    t = quiet(max_steps=5, max_epochs=100, num_sanity_val_steps=0)
    t.fit(Regression(), train_dataloaders=train)
    assert t.global_step == 5 and t.current_epoch == 0

    t = quiet(overfit_batches=2, max_epochs=30, num_sanity_val_steps=0)
    model = Regression(lr=0.1)
    t.fit(model, train_dataloaders=train, val_dataloaders=val)
    assert t.global_step == 60 and t.callback_metrics["val_loss"] < 0.05  # validated on the same 2 batches


def test_max_time_stops_training():
    train, _ = loaders(n=256)

    class Slow(msforge.Callback):
        def on_train_batch_end(self, *args):
            time.sleep(0.05)

    t = quiet(max_epochs=1000, max_time={"seconds": 3}, num_sanity_val_steps=0, callbacks=[Slow()])
    start = time.monotonic()
    t.fit(Regression(), train_dataloaders=train)
    assert time.monotonic() - start < 10 and 5 <= t.global_step < 100


def test_max_time_counts_the_time_before_a_resume(tmp_path):
    """A resumed fit's max_time includes the time of the fit that saved the checkpoint: with the same limit it trains no
    further step; with a longer one it trains on."""
    train, _ = loaders(n=256)

    class Slow(msforge.Callback):
        def on_train_batch_end(self, *args):
            time.sleep(0.05)

    first = quiet(max_epochs=1000, max_time={"seconds": 3}, num_sanity_val_steps=0, callbacks=[Slow()])
    first.fit(Regression(), train_dataloaders=train)
    path = str(tmp_path / "timed_out.ckpt")
    first.save_checkpoint(path)
    # under load the compile can take most of the 3 s: one step is enough for what follows to mean something
    assert first.global_step >= 1

    same = quiet(max_epochs=1000, max_time={"seconds": 3}, num_sanity_val_steps=0, callbacks=[Slow()])
    same.fit(Regression(), train_dataloaders=train, ckpt_path=path)
    assert same.global_step == first.global_step

    longer = quiet(max_epochs=1000, max_time={"seconds": 6}, num_sanity_val_steps=0, callbacks=[Slow()])
    longer.fit(Regression(), train_dataloaders=train, ckpt_path=path)
    # each step sleeps 0.05 s, so the 3 s left after the first fit's 3 s hold at most 60 steps (+1 that ends past
    # the limit); a resume that forgot the first 3 s would have 6 s, room for ~100 steps after its compile.
    assert first.global_step < longer.global_step <= first.global_step + 3 / 0.05 + 1


def test_validate_test_predict_return_values():
    train, val = loaders()
    model = Regression()
    t = quiet(max_epochs=2, num_sanity_val_steps=0)
    t.fit(model, train_dataloaders=train, val_dataloaders=val)
    [v] = t.validate(model, val, verbose=False)
    [r] = t.test(model, val, verbose=False)
    assert set(v) == {"val_loss"} and set(r) == {"test_mae"}
    x, y = LinearData(64, seed=1).x, LinearData(64, seed=1).y
    assert r["test_mae"] == pytest.approx(np.abs(model(Tensor(x)).asnumpy() - y).mean(), rel=1e-5)
    preds = t.predict(model, DataLoader(LinearData(40), 16))
    assert [p.shape for p in preds] == [(16, 1), (16, 1), (8, 1)]
    two = t.test(model, [val, DataLoader(LinearData(32, seed=2), 16)], verbose=False)
    assert [set(d) for d in two] == [{"test_mae/dataloader_idx_0"}, {"test_mae/dataloader_idx_1"}]


def test_epoch_metrics_are_batch_size_weighted():
    class Const(Regression):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch[0].shape[0]))  # 32 then 8: weighted mean = (32*32 + 8*8) / 40

    t = quiet(max_epochs=1, num_sanity_val_steps=0)
    [res] = t.validate(Const(), DataLoader(LinearData(40), 32), verbose=False)
    assert res["v"] == pytest.approx((32 * 32 + 8 * 8) / 40)


def test_pynative_mode_runs_the_same_step():
    train, _ = loaders(n=64)
    weights = []
    for mode in ("graph", "pynative"):
        model = Regression(lr=0.1, optimizer="sgd")
        quiet(max_epochs=1, num_sanity_val_steps=0, mode=mode).fit(model, train_dataloaders=train)
        weights.append(model.fc.weight.asnumpy())
    ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs, needle", [
    ({"precision": "8-mixed"}, "precision='8-mixed'"),
    ({"device_target": "TPU"}, "device_target='TPU'"),
    ({"gradient_clip_algorithm": "l3"}, "gradient_clip_algorithm='l3'"),
    ({"loss_scale": "sometimes"}, "loss_scale='sometimes'"),
    ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
    ({"max_time": "soon"}, "max_time='soon'"),
])
def test_bad_trainer_arguments_give_one_line_errors(kwargs, needle):
    with pytest.raises(MisconfigurationError) as err:
        quiet(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def _fit_error(model, batches):
    with pytest.raises(MisconfigurationError) as err:
        quiet(max_epochs=1, num_sanity_val_steps=0).fit(model, train_dataloaders=batches)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_models_and_batches_give_one_line_errors():
    x, y = _one_batch(n=8)

    class NoOptimizer(Regression):
        configure_optimizers = Module.configure_optimizers

    with pytest.raises(NotImplementedError, match="configure_optimizers"):
        quiet(max_epochs=1).fit(NoOptimizer(in_features=4), train_dataloaders=[(x, y)])

    class WrongOptimizer(Regression):
        def configure_optimizers(self):
            return "adam"

    assert "returned str" in _fit_error(WrongOptimizer(in_features=4), [(x, y)])

    class ReturnsTuple(Regression):
        def training_step(self, batch):
            x, y = batch
            return ((self.construct(x) - y) ** 2).mean(), 1.0

    msg = _fit_error(ReturnsTuple(in_features=4), [(x, y)])
    assert "training_step of ReturnsTuple returned a tuple" in msg

    class Uncompilable(Regression):
        def training_step(self, batch):
            x, y = batch
            return ((self.construct(x) - y) ** 2).mean() + {1: 2}

    msg = _fit_error(Uncompilable(in_features=4), [(x, y)])
    assert "training_step of Uncompilable failed" in msg and "mode='pynative'" in msg

    class CallsSelf(Regression):
        def training_step(self, batch):
            x, y = batch
            return ((self(x) - y) ** 2).mean()

    msg = _fit_error(CallsSelf(in_features=4), [(x, y)])
    assert "self.construct(...)" in msg and "line" in msg

    assert "is a list" in _fit_error(Regression(in_features=4), [(x, [1, 2])])
    assert "yielded a str" in _fit_error(Regression(in_features=4), ["abc"])


def test_self_call_in_training_step_works_in_pynative_mode():
    x, y = _one_batch(n=8)

    class CallsSelf(Regression):
        def training_step(self, batch):
            x, y = batch
            return ((self(x) - y) ** 2).mean()

    t = quiet(max_epochs=1, num_sanity_val_steps=0, mode="pynative")
    t.fit(CallsSelf(in_features=4), train_dataloaders=[(x, y)])
    ms.set_context(mode=ms.GRAPH_MODE)
    assert t.global_step == 1


def test_save_hyperparameters_records_init_arguments():
    m = Regression(lr=0.3, optimizer="sgd")
    assert m.hparams == {"lr": 0.3, "optimizer": "sgd", "in_features": 8}
    assert m.hparams.lr == 0.3
