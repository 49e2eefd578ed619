"""An experiment's whole fit loop against its compiled training step alone: where a long run's steps/s go.

The experiment is built from its YAML as ``experiments/run.py`` builds it (model, precision, schedule, callbacks, the
DataModule generating its videos in the loader's thread), with short epochs of ``--steps`` steps and a one-batch
validation at each epoch end. Inside the fit, a callback times every batch; at each epoch end it runs the Trainer's
own compiled step (``trainer.train_step``) over the epoch's batches, held as ready Tensors, and times that too, so the
two alternate epoch by epoch on the same machine state (the first epoch compiles and is dropped; the extra steps train
the model further, which changes no timing). Only intervals between consecutive batches of an epoch are counted, so
validation, checkpoints and epoch ends are left out: what remains is what ``max_time`` pays every step.

``--data memory`` trains on ``--steps`` batches the DataModule made before the fit, the same list every epoch (the
Trainer iterates a list of batches in the main thread): no video is generated while the fit runs, so the two runs'
ratios differ by what generating the videos beside the step costs.

Prints the medians over epochs: the fit's ms per step, split into the batch (``on_train_batch_start`` to
``on_train_batch_end``: the step, reading its outputs, the step log, the scheduler, the hooks) and the gap to the next
batch (the loader's next batch, its conversion to Tensors, the other callbacks' batch hooks); the step alone; and
the ratio fit / step.

    python bench/fit_vs_step.py [--config mmnist_2h_bf16.yaml] [--epochs 6] [--steps 40] [--data generated|memory]
                                [--json]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, loadavg  # noqa: E402

sys.path.insert(0, ROOT)
import msforge  # noqa: E402,F401  (before mindspore: caps oneDNN's ISA)
from msforge import Callback  # noqa: E402


class StepAB(Callback):
    """Times the fit's batches and, at each epoch end, the compiled step alone over the same batches."""

    def __init__(self):
        self.batches, self.starts, self.ends = [], [], []
        self.fit_ms, self.batch_ms, self.gap_ms, self.step_ms = [], [], [], []

    def on_train_epoch_start(self, trainer, module):
        self.batches, self.starts, self.ends = [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.starts.append(time.perf_counter())
        self.batches.append(batch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, module):
        import mindspore as ms

        n = len(self.starts) - 1  # intervals start[i] -> start[i + 1]
        if n < 1:
            return
        self.fit_ms.append(1e3 * (self.starts[-1] - self.starts[0]) / n)
        self.batch_ms.append(1e3 * sum(e - s for s, e in zip(self.starts[:n], self.ends[:n])) / n)
        self.gap_ms.append(1e3 * sum(s - e for e, s in zip(self.ends[:n], self.starts[1:])) / n)
        step = trainer.train_step
        t0 = time.perf_counter()
        for batch in self.batches[:n]:
            out = step(True, ms.mutable(tuple(batch)))[0]
        (out[0] if isinstance(out, tuple) else out).asnumpy()  # the step's work done before the clock stops
        self.step_ms.append(1e3 * (time.perf_counter() - t0) / n)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="mmnist_2h_bf16.yaml", help="an experiments/ config")
    parser.add_argument("--epochs", type=int, default=6, help="epochs, the first (compiling) one dropped")
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--data", choices=("generated", "memory"), default="generated",
                        help="the DataModule's loader as configured, or batches made before the fit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.epochs < 2 or args.steps < 2:
        raise SystemExit(f"fit_vs_step: --epochs {args.epochs} --steps {args.steps}: need at least 2 of each")

    from experiments import run as runner

    root = tempfile.mkdtemp(prefix="msforge-fit-vs-step-")
    config_path = runner.C.find_config(args.config, [os.path.join(ROOT, "experiments")])
    config = runner.C.load_yaml(config_path)
    batch = int(config["data"]["init_args"]["batch_size"])
    overrides = [f"trainer.max_epochs={args.epochs}", f"trainer.default_root_dir={root}",
                 "trainer.val_check_interval=1.0", "trainer.num_sanity_val_steps=0",
                 f"data.init_args.samples_per_epoch={batch * args.steps}",
                 f"data.init_args.val_size={batch}"]
    config = runner.C.apply_overrides(config, overrides)
    cli = runner.parse_args([config_path, *overrides, "--stage", "fit"])
    built = runner.prepare(config_path, config, cli)

    ab = StepAB()
    built.trainer.callbacks.append(ab)
    data = {"datamodule": built.datamodule}
    if args.data == "memory":
        built.datamodule.prepare_data()
        built.datamodule.setup("fit")
        loader = built.datamodule.train_dataloader()
        batches = [b for _, b in zip(range(args.steps), loader)]
        data = {"train_dataloaders": batches, "val_dataloaders": built.datamodule.val_dataloader()}
    try:
        built.trainer.fit(built.model, **data)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the run folder: logs and checkpoints of a benchmark

    fit, step = statistics.median(ab.fit_ms[1:]), statistics.median(ab.step_ms[1:])
    batch_part, gap = statistics.median(ab.batch_ms[1:]), statistics.median(ab.gap_ms[1:])
    result = {"fit_vs_step_config": args.config, "fit_vs_step_data": args.data, "fit_vs_step_fit_ms": fit,
              "fit_vs_step_batch_ms": batch_part, "fit_vs_step_gap_ms": gap, "fit_vs_step_step_ms": step,
              "fit_vs_step_ratio_fit_over_step": fit / step, "loadavg": loadavg()}
    lines = [f"{args.config}, {args.data} data: fit {fit:.1f} ms/step (batch {batch_part:.1f} + gap to the next "
             f"{gap:.1f}), compiled step alone {step:.1f} ms/step: ratio fit/step {fit / step:.3f} (medians over "
             f"{args.epochs - 1} alternating epochs of {args.steps} steps; load average {result['loadavg']})"]
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
