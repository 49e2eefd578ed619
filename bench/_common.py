"""Small helpers shared by the benchmarks (no MindSpore or torch import here: the torch subprocess uses it too)."""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_MARK = "BENCH_JSON "  # prefix of the machine-readable lines a benchmark subprocess prints


def loadavg():
    """1-minute load average (the machine has 2 cores: above ~2 others are competing with the benchmark)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def median(values):
    return statistics.median(values) if values else float("nan")


def emit(result, as_json, lines=()):
    """Print the human-readable ``lines`` (unless ``as_json``) and then the result as one JSON line (always last)."""
    if not as_json:
        for line in lines:
            print(line)
    print(json.dumps(result, sort_keys=True), flush=True)


def send(obj):
    """From a subprocess: one machine-readable line on stdout."""
    sys.stdout.write(JSON_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_json_line(stream, proc=None, what="subprocess"):
    """Read ``stream`` until a ``JSON_MARK`` line; other lines (library chatter) are skipped."""
    while True:
        line = stream.readline()
        if not line:
            code = proc.wait() if proc is not None else None
            raise RuntimeError(f"{what} ended (exit code {code}) before reporting; see its log")
        if line.startswith(JSON_MARK):
            return json.loads(line[len(JSON_MARK):])


def last_json(text):
    """The last line of ``text`` that parses as a JSON object (what every bench script prints last)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError("no JSON object line in the output")


def child_env():
    """The environment of a benchmark subprocess: this one's, with the repository first on PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))


def run_child(script, args, what, timeout=3600):
    """Run ``python script --child *args`` to its end and return the last JSON object it printed; one-line SystemExit
    naming ``what`` and the child's last error line if it fails."""
    proc = subprocess.run([sys.executable, os.path.abspath(script), "--child", *map(str, args)],
                          capture_output=True, text=True, env=child_env(), timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return last_json(proc.stdout)


DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "convlstm_mnist.yaml")
MODEL_CHOICES = ("default", "cpu_small", "seed")
PRESET_BATCH = {"cpu_small": 8, "seed": 2}  # issue 5's measurements


def model_spec(name, config_path=DEFAULT_CONFIG):
    """``(ConvLSTMModule keyword arguments, batch size)`` for ``name``: "default" is the default experiment's model and
    batch size as its YAML says (``experiments/convlstm_mnist.yaml``); "cpu_small" and "seed" are the presets of
    models/convlstm.py at issue 5's batch sizes (8 and 2)."""
    if name != "default":
        return {"preset": name}, PRESET_BATCH[name]
    import yaml

    with open(config_path) as f:
        config = yaml.safe_load(f)
    kwargs = {}
    for key, value in (config["model"].get("init_args") or {}).items():
        if isinstance(value, str):  # PyYAML reads "1e-3" as a string (YAML 1.1); experiments/config.py does not
            try:
                value = float(value)
            except ValueError:
                pass
        kwargs[key] = value
    # the benchmarks compare steps, twins and frameworks on the MSE loss (the PyTorch twins' loss), whatever loss the
    # main job trains with
    kwargs["loss"] = "mse"
    return kwargs, int(config["data"]["init_args"].get("batch_size", 16))
