"""C++ CPU kernels for ``ops.Custom(func_type="aot")``, compiled on first use, with MindSpore's own ops as fallback.

:func:`library` returns the path of a compiled shared library, or None with the reason when it cannot be had (no
C++ compiler, a failed build, ``MSFORGE_KERNELS=0`` in the environment). Libraries are built with ``-O3
-march=native`` into ``$MSFORGE_CACHE_DIR`` (default ``~/.cache/msforge``)``/kernels/``, named by a hash of the
source, the flags, the compiler and this CPU's feature flags, so a changed source or another machine sharing the
folder gets its own build. Concurrent builds (data-parallel workers) each write a temporary file and rename it into
place: whichever lands last wins, and every reader sees a complete library.

``conv2d`` also links the oneDNN library MindSpore ships (``mindspore/lib/libdnnl.so.3``); the link flags are part
of the hash.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = ("-O3", "-march=native", "-std=c++14", "-shared", "-fPIC")
_built = {}  # name -> (path or None, reason)


def _onednn_flags():
    """Link flags for MindSpore's own oneDNN, or (None, reason)."""
    import mindspore

    folder = os.path.join(os.path.dirname(os.path.abspath(mindspore.__file__)), "lib")
    if not os.path.isfile(os.path.join(folder, "libdnnl.so.3")):
        return None, f"MindSpore's oneDNN library libdnnl.so.3 is not in {folder}"
    return ("-pthread", f"-L{folder}", "-l:libdnnl.so.3", f"-Wl,-rpath,{folder}"), None


LINK_FLAGS = {"conv2d": _onednn_flags}  # name -> function returning (flags, None) or (None, reason)


def cache_dir():
    root = os.environ.get("MSFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "msforge")
    return os.path.join(root, "kernels")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor()


def library(name):
    """``(path, None)`` of ``lib<name>.so`` built from ``<name>.cc`` here, or ``(None, reason)``."""
    if name not in _built:
        _built[name] = _build(name)
    return _built[name]


def _build(name):
    if os.environ.get("MSFORGE_KERNELS", "1") == "0":
        return None, "MSFORGE_KERNELS=0"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        return None, "no C++ compiler found (set CXX or install g++)"
    link = ()
    if name in LINK_FLAGS:
        link, reason = LINK_FLAGS[name]()
        if link is None:
            return None, reason
    source = os.path.join(HERE, f"{name}.cc")
    with open(source, "rb") as f:
        code = f.read()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"{compiler} --version failed: {err}"
    flags = " ".join(FLAGS + link).encode()
    key = hashlib.sha256(b"\0".join([code, flags, version.encode(), _cpu_flags().encode()]))
    folder = cache_dir()
    path = os.path.join(folder, f"lib{name}-{key.hexdigest()[:16]}.so")
    if os.path.isfile(path):
        return path, None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(fd)
    except OSError as err:
        return None, f"cannot write to the kernel cache {folder}: {err}"
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", tmp, source, *link], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no output"])[0]
            return None, f"{compiler} failed (exit code {result.returncode}) on {source}: {first}"
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"building {source} failed: {err}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, None
