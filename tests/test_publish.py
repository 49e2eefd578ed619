"""experiments/publish_checkpoint.py: a checkpoint cut down to the model's weights tests exactly like the original and
holds no path of the machine that trained it."""
import json
import os
import subprocess
import sys

from msforge import checkpoint as ckpt_io
from test_run import ROOT, TINY_MODULE, TINY_YAML, _env, run_cli

PUBLISH = os.path.join(ROOT, "experiments", "publish_checkpoint.py")


def holds(path, text):
    """Whether the file holds ``text`` (MindSpore stores append_dict strings as UTF-32)."""
    data = path.read_bytes()
    return any(text.encode(encoding) in data for encoding in ("utf-8", "utf-32-le"))


def test_the_published_checkpoint_tests_like_the_original_and_carries_no_machine_path(tmp_path):
    (tmp_path / "tiny_video.py").write_text(TINY_MODULE)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    fit = run_cli(tmp_path, "tiny.yaml", "trainer.max_epochs=2", "--stage", "fit")
    assert fit.returncode == 0, fit.stderr[-3000:]
    last = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert holds(last, str(tmp_path))  # ModelCheckpoint's state: this machine's paths

    published = tmp_path / "docs" / "tiny.ckpt"
    result = subprocess.run([sys.executable, PUBLISH, "tiny.yaml", str(last), str(published)], cwd=tmp_path,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 weights of TinyVideoModule" in result.stdout
    assert not holds(published, str(tmp_path)) and not holds(published, "checkpoints")
    params, state = ckpt_io.load(str(published))
    assert sorted(params) == ["conv.bias", "conv.weight"] and state["weights_only"] and "callbacks" not in state

    reports = []
    for ckpt in (str(last), "docs/tiny.ckpt"):
        test = run_cli(tmp_path, "tiny.yaml", "--stage", "test", "--ckpt", ckpt)
        assert test.returncode == 0, test.stderr[-3000:]
        version = sorted(os.listdir(tmp_path / "runs" / "tiny"))[-1]
        reports.append(json.loads((tmp_path / "runs" / "tiny" / version / "test_metrics.json").read_text()))
    assert reports[0]["model"] == reports[1]["model"]

    refused = run_cli(tmp_path, "tiny.yaml", "--stage", "fit", "--ckpt", "docs/tiny.ckpt")
    assert refused.returncode != 0 and "weights only" in refused.stderr


def test_a_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    (tmp_path / "tiny_video.py").write_text(TINY_MODULE)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    other = tmp_path / "other.ckpt"
    import mindspore as ms
    import numpy as np

    ckpt_io.save(str(other), [("fc.weight", ms.Parameter(ms.Tensor(np.zeros((2, 2), np.float32)), name="fc.weight"))],
                 {})
    result = subprocess.run([sys.executable, PUBLISH, "tiny.yaml", str(other), str(tmp_path / "out.ckpt")],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert result.returncode == 2 and not (tmp_path / "out.ckpt").exists()
    assert result.stderr.strip().splitlines()[-1].startswith("error: checkpoint ") and "does not match" in result.stderr
