#!/usr/bin/env python
"""Learning curve of a finished run: validation metrics against training videos seen and wall-clock time.

    python experiments/learning_curve.py RUN_FOLDER [--target 62.76] [--png PATH]

Reads the run folder's ``metrics.csv`` (``val_*`` at each validation, ``time_train_s`` from the ``Timer`` callback),
``config.yaml`` (batch size, gradient accumulation) and ``test_metrics.json`` when the test stage ran. Prints a
Markdown table (step, videos seen, minutes, val MSE / MAE / SSIM) and writes ``learning_curve.png`` (val MSE against
videos seen and against minutes, with the test MSE and the ``--target`` line).

Extrapolation: a power law ``MSE = a * videos**-b`` fitted (least squares in log-log) to the second half of the
validation points, solved for ``--target``. A learning-rate schedule that decays to zero bends the end of a curve,
so the figure is a rough indication of the order of magnitude, printed with the points it was fitted on.
"""
import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import yaml


def read_curve(run_dir):
    """``[{step, videos, minutes, val_mse, val_mae, val_ssim}]`` from the run folder, one entry per validation."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    batch = int(config["data"]["init_args"]["batch_size"])
    accumulate = int(config["trainer"].get("accumulate_grad_batches") or 1)
    val, times = {}, {}
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            if row.get("val_mse"):
                val[step] = row
            if row.get("time_train_s"):
                times[step] = float(row["time_train_s"])
    missing = sorted(set(val) - set(times))
    if not val or missing:
        raise SystemExit(f"error: {run_dir}/metrics.csv: " + (
            "no val_mse rows" if not val else f"no time_train_s at step(s) {missing[:5]}: add callbacks.Timer"))
    return [{"step": s, "videos": s * batch * accumulate, "minutes": times[s] / 60.0,
             "val_mse": float(val[s]["val_mse"]), "val_mae": float(val[s]["val_mae"]),
             "val_ssim": float(val[s]["val_ssim"])} for s in sorted(val) if s > 0]


def power_law(points, target):
    """Fit ``mse = a * videos**-b`` to the second half of ``points``; return ``(a, b, videos at target, fitted)``."""
    fitted = points[len(points) // 2:]
    x = np.log([p["videos"] for p in fitted])
    y = np.log([p["val_mse"] for p in fitted])
    slope, intercept = np.polyfit(x, y, 1)
    a, b = math.exp(intercept), -slope
    videos = (a / target) ** (1.0 / b) if b > 0 else math.inf
    return a, b, videos, fitted


def table(points, test=None):
    lines = ["| step | videos seen | minutes | val MSE | val MAE | val SSIM |", "|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['step']} | {p['videos']:,} | {p['minutes']:.1f} | {p['val_mse']:.1f} | "
                     f"{p['val_mae']:.1f} | {p['val_ssim']:.3f} |")
    if test:
        lines.append(f"| test ({test['n']:,} videos) | {points[-1]['videos']:,} | {points[-1]['minutes']:.1f} | "
                     f"**{test['mse']:.2f}** | **{test['mae']:.2f}** | **{test['ssim']:.4f}** |")
    return "\n".join(lines)


def plot(points, path, target, test=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "videos", "training videos seen"), (axes[1], "minutes", "training minutes")):
        ax.plot([p[key] for p in points], [p["val_mse"] for p in points], "o-", ms=3, label="val MSE (held-out digits)")
        if test:
            ax.plot([points[-1][key]], [test["mse"]], "r*", ms=10, label=f"test MSE {test['mse']:.1f} ({test['n']:,} videos)")
        ax.axhline(target, color="gray", ls="--", lw=1, label=f"ModelZoo ConvLSTM {target}")
        ax.set_xlabel(label)
        ax.set_ylabel("MSE per frame")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--target", type=float, default=62.76, help="MSE to extrapolate to (default: ModelZoo's)")
    parser.add_argument("--png", default=None, help="default: RUN_DIR/learning_curve.png")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        raise SystemExit(f"error: run folder {args.run_dir!r} does not exist")
    points = read_curve(args.run_dir)
    test = None
    test_path = os.path.join(args.run_dir, "test_metrics.json")
    if os.path.isfile(test_path):
        with open(test_path) as f:
            saved = json.load(f)
        model = saved.get("model", saved)
        test = {"mse": model["test_mse"], "mae": model["test_mae"], "ssim": model["test_ssim"],
                "n": int(saved.get("sequences", 0))}
    print(table(points, test))
    png = args.png or os.path.join(args.run_dir, "learning_curve.png")
    plot(points, png, args.target, test)
    print(f"\nlearning curve: {png}")
    if len(points) >= 4:
        a, b, videos, fitted = power_law(points, args.target)
        rate = points[-1]["videos"] / points[-1]["minutes"]
        print(f"power law on the last {len(fitted)} points (videos {fitted[0]['videos']:,}..{fitted[-1]['videos']:,}): "
              f"MSE = {a:.4g} * videos^-{b:.3f}; MSE {args.target} at ~{videos:,.0f} videos = "
              f"~{videos / rate / 60:,.1f} h at this run's {rate * 60:,.0f} videos/h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
