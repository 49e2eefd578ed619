"""C++ CPU kernels for ``ops.Custom(func_type="aot")``, compiled on first use, with MindSpore's own ops as fallback.

:func:`library` returns the path of a compiled shared library, or None with the reason when it cannot be had (no
C++ compiler, a failed build, ``MSFORGE_KERNELS=0`` in the environment). Libraries are built with ``-O3
-march=native`` into ``$MSFORGE_CACHE_DIR`` (default ``~/.cache/msforge``)``/kernels/``, named by a hash of the
source and the headers here (``thread_pool.h``), the flags, the compiler and this CPU's feature flags, so a changed
source or another machine sharing the folder gets its own build. Concurrent builds (data-parallel workers) each
write a temporary file and rename it into place: whichever lands last wins, and every reader sees a complete library.

``conv2d`` loads the oneDNN library MindSpore ships (``mindspore/lib/libdnnl.so.3``) at run time, and a copy of it
(58 MB for MindSpore 2.10) kept in the same cache folder; both paths are compiled in, part of the flags and so of the
hash.
"""
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# -fopenmp-simd: `omp simd` loops, no OpenMP runtime; -fno-trapping-math: lets floor and float->int vectorise
# (nothing here reads floating-point exception flags)
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-trapping-math", "-std=c++14", "-shared", "-fPIC")
_built = {}  # name -> (path or None, reason)


def _onednn_copy_path():
    """MindSpore's oneDNN library and where conv2d.cc expects its private copy (see there), or (None, reason)."""
    import mindspore

    library = os.path.join(os.path.dirname(os.path.abspath(mindspore.__file__)), "lib", "libdnnl.so.3")
    if not os.path.isfile(library):
        return None, f"MindSpore's oneDNN library is not at {library}"
    stat = os.stat(library)
    stamp = hashlib.sha256(f"{library}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return (library, os.path.join(cache_dir(), f"libdnnl-copy-{stamp}.so")), None


def _onednn_flags():
    paths, reason = _onednn_copy_path()
    if paths is None:
        return None, reason
    library, copy = paths
    return ("-pthread", f'-DMSFORGE_ONEDNN_PATH="{library}"', f'-DMSFORGE_ONEDNN_COPY="{copy}"', "-ldl"), None


def _make_onednn_copy():
    """Copy MindSpore's oneDNN next to the built kernel, once. Without the copy (read-only cache, full disk) the
    kernel runs on MindSpore's own instance, so a failure here is not an error."""
    (library, copy), _ = _onednn_copy_path()
    if os.path.isfile(copy):
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=os.path.dirname(copy))
        os.close(fd)
        shutil.copyfile(library, tmp)
        os.replace(tmp, copy)
    except OSError:
        pass
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


LINK_FLAGS = {"conv2d": _onednn_flags}  # name -> function returning (flags, None) or (None, reason)
AFTER_BUILD = {"conv2d": _make_onednn_copy}  # name -> function run once the library is in the cache


def cache_dir():
    root = os.environ.get("MSFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "msforge")
    return os.path.join(root, "kernels")


def _remove_abandoned_temporaries(folder, age_s=3600):
    """Delete ``*.so.tmp`` files older than an hour: a build or oneDNN copy killed midway (the copy is 58 MB) leaves
    one; a live build's is minutes old at most."""
    for tmp in glob.glob(os.path.join(folder, "*.so.tmp")):
        try:
            if time.time() - os.stat(tmp).st_mtime > age_s:
                os.unlink(tmp)
        except OSError:
            pass  # another process removed or renamed it first


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
        if _built[name][0] is not None and name in AFTER_BUILD:
            AFTER_BUILD[name]()
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
    code = b""
    for path in [source] + sorted(glob.glob(os.path.join(HERE, "*.h"))):  # the headers any kernel may include
        with open(path, "rb") as f:
            code += f.read() + b"\0"
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
        _remove_abandoned_temporaries(folder)
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
