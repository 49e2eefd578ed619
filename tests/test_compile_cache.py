"""MindSpore's compile cache with the main job's model as configured (its training_step returns a dict): real runs of
experiments/run.py that fill the cache (cold) and load it (warm), against a run without it."""
import csv
import json
import os
import subprocess
import sys

import pytest

from msforge.compile_cache import NAMES_FILE, load_output_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")
CACHE_USED = "Use the compilation cache"  # MindSpore's own log line when it loads a graph
SHRUNK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1",
          "trainer.val_check_interval=null", "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
          "data.init_args.samples_per_epoch=6", "data.init_args.val_size=2", "data.init_args.test_size=2",
          "data.init_args.batch_size=2", "model.init_args.hidden=[8]", "model.init_args.kernel_sizes=[3]",
          "model.init_args.downsample=[false]"]


def run(folder, name, cache=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MS_COMPILER_CACHE") and k != "MSFORGE_TRACEBACK"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env["GLOG_v"] = "2"  # MindSpore's warnings, among them the line saying it loaded the cache
    if cache is not None:
        env.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(cache))
    return subprocess.run([sys.executable, RUN, "convlstm_mnist.yaml", *SHRUNK, f"name={name}",
                           f"trainer.default_root_dir={folder}", "--stage", "fit"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def train_columns(folder, name):
    """The logged training outputs per step: {column: [values]} for train_loss, train_mse, train_mae."""
    with open(folder / name / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train_loss")]
    return {key: [row[key] for row in rows] for key in ("train_loss", "train_mse", "train_mae")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache_runs")
    cache = folder / "cache"
    results = {label: run(folder, label, None if label == "plain" else cache) for label in ("plain", "cold", "warm")}
    return folder, cache, results


def test_cold_and_warm_runs_train_the_dict_returning_model(runs):
    folder, cache, results = runs
    for label, result in results.items():
        assert result.returncode == 0, f"{label}: {result.stderr[-3000:]}"
    assert CACHE_USED not in results["cold"].stderr and CACHE_USED in results["warm"].stderr
    with open(cache / NAMES_FILE) as f:
        assert json.load(f) == {"training_step": ["loss", "mse", "mae"]}


def test_a_warm_run_logs_the_same_outputs_as_a_run_without_the_cache(runs):
    folder, _, _ = runs
    plain = train_columns(folder, "plain")
    assert len(plain["train_loss"]) == 3 and all(float(v) > 0 for v in plain["train_mse"])
    assert train_columns(folder, "cold") == plain
    assert train_columns(folder, "warm") == plain


def test_a_cache_without_its_output_names_fails_in_one_line(runs):
    folder, cache, _ = runs
    (cache / NAMES_FILE).rename(cache / "names.bak")
    try:
        result = run(folder, "no_names", cache)
    finally:
        (cache / "names.bak").rename(cache / NAMES_FILE)
    assert result.returncode != 0 and CACHE_USED in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "loaded training_step from its compile cache" in line and NAMES_FILE in line
    assert "delete the cache folder" in line


def test_names_that_do_not_fit_the_cached_graph_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "1")
    monkeypatch.setenv("MS_COMPILER_CACHE_PATH", str(tmp_path))
    (tmp_path / NAMES_FILE).write_text(json.dumps({"training_step": ["loss", "mse"]}))
    assert load_output_names("training_step", 2) == ("loss", "mse")
    with pytest.raises(ValueError, match=r"names 2 outputs of training_step \(loss, mse\) but the cached graph "
                                         r"returns 3"):
        load_output_names("training_step", 3)
    (tmp_path / NAMES_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        load_output_names("training_step", 2)
