"""import msforge caps oneDNN's ISA unless the user chose one, and warns when it is too late to."""
import os
import subprocess
import sys


def run(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


def test_import_sets_avx2_cap():
    out = run("import os, msforge; print(os.environ['ONEDNN_MAX_CPU_ISA'])")
    assert out.stdout.strip() == "AVX2"


def test_user_choice_is_kept():
    out = run("import os, msforge; print(os.environ['ONEDNN_MAX_CPU_ISA'])", ONEDNN_MAX_CPU_ISA="ALL")
    assert out.stdout.strip() == "ALL"


def test_warns_when_mindspore_came_first():
    out = run("import mindspore, os, msforge; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))")
    assert out.stdout.strip().endswith("None") and "mindspore was imported before msforge" in out.stderr
