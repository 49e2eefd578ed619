"""What reading the step's outputs back only where needed gives the Trainer (issue 15, item 3): the Trainer as it is
(outputs read at log steps, validation, checkpoints and epoch ends) against the same Trainer with a callback that
reads ``trainer.callback_metrics`` at every batch end, which reads every step back as the Trainer did before
(and as a progress bar on a terminal still does), steps/s and the ratio.

Two models: the tiny MLP of bench/tiny.py (32-64-1, batch 64, Adam: the step is short, host costs show most) and the
main job's ConvLSTMModule as experiments/convlstm_mnist.yaml configures it. Each measurement is its own subprocess: a
fit of ``--warmup`` steps (compiling) and ``--steps`` timed ones from batch end to batch end, ``log_every_n_steps=50``,
no logger, checkpoint, progress bar or validation; the two sides alternate round after round, each figure the median
over ``--rounds``.

    python bench/step_reads.py [--rounds 3] [--steps 2000] [--models tiny,convlstm] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, loadavg, median, model_spec, run_child  # noqa: E402
from tiny import batches, mlp_module, rate  # noqa: E402

MODELS = ("tiny", "convlstm")
SIDES = ("as_built", "read_every_step")


def module_and_data(name):
    """(Module, list of batches as tuples of Tensors) for ``name``."""
    import numpy as np
    from mindspore import Tensor

    if name == "tiny":
        return mlp_module(), [tuple(Tensor(a) for a in b) for b in batches()]
    from models.convlstm import ConvLSTMModule

    kwargs, batch = model_spec("default")
    module = ConvLSTMModule(**kwargs)
    rng = np.random.default_rng(0)
    clip = (module.in_frames + module.out_frames, *module.frame_shape)
    return module, [(Tensor(rng.random(size=(batch, *clip)).astype(np.float32)),) for _ in range(4)]


def child(name, side, warmup, steps):
    import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)
    import mindspore as ms

    from msforge import Callback, Trainer

    ms.set_seed(0)
    module, data = module_and_data(name)
    events = []

    class Clock(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if side == "read_every_step":
                trainer.callback_metrics  # noqa: B018  (the read is the point)
            events.append((trainer.global_step, time.perf_counter()))

    total = warmup + steps
    trainer = Trainer(max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Clock()], log_every_n_steps=50)
    trainer.fit(module, train_dataloaders=[data[i % len(data)] for i in range(total)])
    print(json.dumps({"steps_per_s": rate(events, warmup), "loadavg": loadavg()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000, help="timed steps (the ConvLSTM runs a twentieth of them)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, side = args.child
        steps = args.steps if name == "tiny" else max(args.steps // 20, 50)
        child(name, side, args.warmup, steps)
        return
    result, lines = {}, []
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
        rates, loads = {side: [] for side in SIDES}, []
        for _ in range(args.rounds):
            for side in SIDES:
                row = run_child(__file__, [name, side, "--steps", args.steps, "--warmup", args.warmup],
                                f"step_reads: {name} {side}")
                rates[side].append(row["steps_per_s"])
                loads.append(row["loadavg"])
        m = {side: median(v) for side, v in rates.items()}
        ratio = m["as_built"] / m["read_every_step"]
        result[f"step_reads_{name}_as_built_steps_per_s"] = round(m["as_built"], 2)
        result[f"step_reads_{name}_read_every_step_steps_per_s"] = round(m["read_every_step"], 2)
        result[f"step_reads_{name}_ratio_as_built_over_read_every_step"] = round(ratio, 3)
        lines.append(f"{name:9s} as built {m['as_built']:8.2f} steps/s, read every step {m['read_every_step']:8.2f} "
                     f"steps/s: ratio {ratio:.3f} (rounds {rates}, load average {min(loads)}-{max(loads)})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
