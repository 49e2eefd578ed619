"""Trainer vs MindSpore's own ``mindspore.train.Model.train`` on the same network, loss, optimizer and batches.

Both run in this process and alternate epoch by epoch (A/B): a callback at each Trainer epoch end runs one epoch of
``Model.train`` (``dataset_sink_mode=False``) over the same batches, given as a ``GeneratorDataset``. Each side's
first epoch includes compilation and is dropped; an epoch is timed from its begin to its end hook on both sides
(``Model.train``'s dataset pipeline start-up, before its epoch-begin hook, is left out). Prints per-step medians and
the ratio Trainer/Model.train (target: <= 1.0).

Sink mode: MindSpore 2.10's ``Model.train`` runs ``dataset_sink_mode=True`` on CPU as non-sink (its source says "The
CPU cannot support dataset sink mode currently"), so there is no separate sink figure on CPU; ``--sink`` times it
anyway as a third arm (to show it is the same loop).

Networks (``--model``): ``conv`` (bench/overhead.py's 3-conv net, batch 16 of 4x32x32: small steps, so framework
overhead shows) or ``convlstm`` (models/convlstm.py's ``cpu_small`` EncoderForecaster, batch 8 of 10+10 64x64 frames).
Loss ``nn.MSELoss``, optimizer ``nn.Adam(lr=1e-3)`` on both sides.

    python bench/vs_model_train.py [--model conv|convlstm] [--epochs 6] [--batches 40] [--sink] [--json]
"""
import argparse
import inspect
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msforge  # noqa: F401,E402  (before mindspore: caps oneDNN's ISA)
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn  # noqa: E402
from mindspore.train import Callback as MSCallback  # noqa: E402
from mindspore.train import Model  # noqa: E402

from _common import emit, loadavg, median  # noqa: E402
from overhead import Net as ConvNet  # noqa: E402  (the same network, so the figures compare)
from msforge import Callback, Module, Trainer  # noqa: E402


def make_net(kind):
    if kind == "conv":
        return ConvNet()
    from models.convlstm import EncoderForecaster, cpu_small_config

    return EncoderForecaster(**cpu_small_config())


def make_batches(kind, n, rng):
    shape = (16, 4, 32, 32) if kind == "conv" else (8, 10, 1, 64, 64)
    if kind == "conv":
        return [(rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32))
                for _ in range(n)]
    return [(rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)) for _ in range(n)]


class BenchModule(Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.loss = nn.MSELoss()

    def training_step(self, batch):
        x, y = batch
        return self.loss(self.net(x), y)

    def configure_optimizers(self):
        return nn.Adam(self.trainable_params(), learning_rate=1e-3)


class EpochTimer(MSCallback):
    def __init__(self):
        self.seconds = []

    def on_train_epoch_begin(self, run_context):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, run_context):
        self.seconds.append(time.perf_counter() - self.t0)


class ModelTrainAB(Callback):
    """Times the Trainer's epochs; after each one runs an epoch of Model.train (and of sink mode with ``sink``)."""

    def __init__(self, kind, batches, sink):
        self.n = len(batches)
        # one dataset object per Model (MindSpore refuses to share one between two Models)
        self.arms = {"model_train": (self._model(kind), False, self._dataset(batches))}
        if sink:
            self.arms["model_train_sink"] = (self._model(kind), True, self._dataset(batches))
        self.times = {"trainer": [], **{name: [] for name in self.arms}}
        self.loads = []

    @staticmethod
    def _dataset(batches):
        return ms.dataset.GeneratorDataset(batches, column_names=["x", "y"], shuffle=False)

    @staticmethod
    def _model(kind):
        net = make_net(kind)
        return Model(net, loss_fn=nn.MSELoss(), optimizer=nn.Adam(net.trainable_params(), learning_rate=1e-3))

    def on_train_epoch_start(self, trainer, module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times["trainer"].append((time.perf_counter() - self.t0) / self.n)
        for name, (model, sink, dataset) in self.arms.items():
            timer = EpochTimer()
            model.train(1, dataset, callbacks=[timer], dataset_sink_mode=sink)
            self.times[name].append(timer.seconds[0] / self.n)
        self.loads.append(loadavg())


def sink_supported_on_cpu():
    return "CPU cannot support dataset sink mode" not in inspect.getsource(Model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("conv", "convlstm"), default="conv")
    parser.add_argument("--epochs", type=int, default=6, help="A/B epochs (the first, compiling, is dropped)")
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch (default 40 conv, 4 convlstm)")
    parser.add_argument("--sink", action="store_true", help="also time Model.train(dataset_sink_mode=True)")
    parser.add_argument("--json", action="store_true", help="print only a JSON object")
    args = parser.parse_args()
    n = args.batches or (40 if args.model == "conv" else 4)
    ms.set_seed(0)
    batches = make_batches(args.model, n, np.random.default_rng(0))
    ab = ModelTrainAB(args.model, batches, args.sink)
    trainer = Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      num_sanity_val_steps=0, callbacks=[ab], log_every_n_steps=50)
    trainer.fit(BenchModule(make_net(args.model)), train_dataloaders=batches)
    tr, mt = median(ab.times["trainer"][1:]), median(ab.times["model_train"][1:])
    p = f"vs_model_train_{args.model}"
    result = {f"{p}_trainer_step_s": tr, f"{p}_model_train_step_s": mt,
              f"{p}_ratio_trainer_over_model_train": tr / mt,
              f"{p}_ratio_paired_median": median([a / b for a, b in zip(ab.times["trainer"][1:],
                                                                        ab.times["model_train"][1:])]),
              f"{p}_sink_supported_on_cpu": sink_supported_on_cpu(), f"{p}_loadavg": round(median(ab.loads), 2)}
    lines = [f"Trainer {tr * 1e3:.2f} ms/step, Model.train (sink off) {mt * 1e3:.2f} ms/step ({args.model} net; "
             f"medians over {args.epochs - 1} alternating epochs of {n} steps; load average {result[f'{p}_loadavg']})"]
    if args.sink:
        sk = median(ab.times["model_train_sink"][1:])
        result[f"{p}_model_train_sink_step_s"] = sk
        result[f"{p}_ratio_trainer_over_model_train_sink"] = tr / sk
        lines.append(f"Model.train (dataset_sink_mode=True) {sk * 1e3:.2f} ms/step; ratio Trainer/sink = {tr / sk:.3f}")
    if not result[f"{p}_sink_supported_on_cpu"]:
        lines.append("Model.train(dataset_sink_mode=True) falls back to non-sink on CPU in this MindSpore "
                     f"({ms.__version__}): no separate sink figure")
    lines.append(f"ratio Trainer/Model.train = {tr / mt:.3f} (paired per-epoch median "
                 f"{result[f'{p}_ratio_paired_median']:.3f}; target <= 1.0)")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
