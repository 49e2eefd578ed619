"""callbacks/ uses only msforge's public names, and a user's own callbacks.py in the working folder breaks nothing."""
import ast
import glob
import os
import subprocess
import sys

import msforge

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC_MODULES = {"msforge", "msforge.schedulers"}  # msforge.schedulers: the schedulers configs name by class_path


def test_callbacks_import_only_msforges_public_names():
    for path in glob.glob(os.path.join(REPO, "callbacks", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("msforge"):
                assert node.module in PUBLIC_MODULES, f"{os.path.basename(path)} imports {node.module}"
                if node.module == "msforge":
                    assert {a.name for a in node.names} <= set(msforge.__all__), os.path.basename(path)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("msforge.") for a in node.names), os.path.basename(path)


USER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import callbacks  # the user's own module, first on sys.path
from toy import loaders, make_module
from msforge import Trainer
trainer = Trainer(max_epochs=1, default_root_dir="runs", enable_progress_bar=False)
print(callbacks.MINE, sorted(type(cb).__name__ for cb in trainer.callbacks))
train, val = loaders()
trainer.fit(make_module(), train_dataloaders=train, val_dataloaders=val)
print("saved", trainer.checkpoint_callback.last_model_path.endswith("last.ckpt"))
"""


def test_a_users_callbacks_py_in_the_working_folder_does_not_break_the_trainer(tmp_path):
    (tmp_path / "callbacks.py").write_text("MINE = 'users callbacks'\n")
    script = USER_SCRIPT.format(tests=os.path.join(REPO, "tests"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "users callbacks ['CSVLogger', 'ModelCheckpoint', 'ModelSummary', 'TensorBoard']" \
        in proc.stdout
    assert "saved True" in proc.stdout
