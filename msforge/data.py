"""DataModule and a resumable DataLoader for map-style datasets.

The DataLoader's order depends only on (seed, epoch, rank, world_size), never on global random state, so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have seen.
"""
import itertools
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from mindspore import Tensor

from msforge.arguments import MisconfigurationError


class DataModule:
    """Groups the data of an experiment, as Lightning's LightningDataModule does.

    Override ``prepare_data`` (download, once), ``setup(stage)`` (build datasets; stage is "fit", "validate", "test" or
    "predict") and the ``*_dataloader`` methods. Each dataloader may be an msforge ``DataLoader``, a
    ``mindspore.dataset.Dataset`` or any iterable of batches (tuples of numpy arrays or Tensors).
    """

    def prepare_data(self):
        pass

    def setup(self, stage: str):
        pass

    def teardown(self, stage: str):
        pass

    def train_dataloader(self):
        raise NotImplementedError(f"{type(self).__name__}.train_dataloader() is not implemented")

    def val_dataloader(self):
        return None

    def test_dataloader(self):
        raise NotImplementedError(f"{type(self).__name__}.test_dataloader() is not implemented")

    def predict_dataloader(self):
        raise NotImplementedError(f"{type(self).__name__}.predict_dataloader() is not implemented")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


def _as_tuple(item):
    return item if isinstance(item, tuple) else (item,)


def collate(items):
    """Stack a list of samples (tuples of arrays) into one tuple of batched arrays."""
    first = _as_tuple(items[0])
    columns = zip(*(_as_tuple(it) for it in items))
    try:
        return tuple(np.stack([np.asarray(x) for x in col]) for col in columns)
    except ValueError as err:
        shapes = [np.shape(x) for x in first]
        raise ValueError(f"cannot batch samples of shapes {shapes} and others: {err}") from None


class DataLoader:
    """Batches a map-style dataset (``__len__``, ``__getitem__`` returning a tuple of numpy arrays).

    shuffle: a new permutation each epoch, drawn from ``numpy.random.default_rng([seed, epoch])``.
    num_workers: threads that load the samples of a batch in parallel (0 loads in the prefetch thread itself).
    prefetch: batches prepared ahead in a background thread, so the training step rarely waits on data.
    A dataset with ``set_epoch(epoch)`` is told the epoch too (Moving MNIST generates its videos from it).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0, num_workers=0, prefetch=2):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader needs a map-style dataset with __len__ and __getitem__, got {type(dataset).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader(batch_size={batch_size!r}): must be a positive int")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"DataLoader(num_workers={num_workers!r}): must be an int >= 0")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = num_workers
        self.prefetch = max(int(prefetch), 0)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._skip = 0  # batches to skip at the next __iter__ (set by load_state_dict)
        self._consumed = 0  # batches handed to the consumer in the current epoch

    # -- order -----------------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def shard(self, rank: int, world_size: int):
        """Give this loader the rank-th of world_size disjoint, equally long shares of every epoch."""
        if not 0 <= rank < world_size:
            raise ValueError(f"DataLoader.shard(rank={rank}, world_size={world_size}): need 0 <= rank < world_size")
        self.rank, self.world_size = int(rank), int(world_size)

    def indices(self) -> np.ndarray:
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size if self.drop_last else -(-n // self.world_size)
            # pad by wrapping around so every rank runs the same number of steps (as DistributedSampler does)
            order = np.resize(order, per_rank * self.world_size)[self.rank :: self.world_size]
        return order

    def __len__(self):
        n = len(self.indices()) if self.world_size > 1 else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # -- resume ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_consumed": self._consumed, "seed": self.seed}

    def load_state_dict(self, state: dict):
        self.set_epoch(state["epoch"])
        self._skip = int(state["batches_consumed"])

    # -- iteration -------------------------------------------------------------------------------------------------
    def _batches(self, start):
        order = self.indices()
        n_batches = len(self)
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 0 else None
        try:
            for b in range(start, n_batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                items = list(pool.map(self.dataset.__getitem__, idx)) if pool else [self.dataset[int(i)] for i in idx]
                yield collate(items)
        finally:
            if pool:
                pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self):
        start, self._skip = self._skip, 0
        self._consumed = start
        source = self._batches(start) if self.prefetch == 0 else _prefetched(self._batches(start), self.prefetch)
        for batch in source:
            self._consumed += 1
            yield batch


_END = object()


def _prefetched(iterator, depth):
    """Run ``iterator`` in a daemon thread, ``depth`` items ahead of the consumer; re-raise its errors here."""
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as err:  # handed to the consumer, which raises it
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True, name="msforge-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


# == what the Trainer reads from any dataloader ==================================================================
def iterate_batches(loader, limit, start=0, epoch=None):
    """Yield ``(batch_idx, batch)`` from ``start`` up to ``limit``; msforge DataLoaders skip without loading."""
    if limit <= start:
        return
    if isinstance(loader, DataLoader):
        loader.load_state_dict({"epoch": loader.epoch if epoch is None else epoch, "batches_consumed": start})
        source = iter(loader)
    else:
        if epoch is not None and hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        if hasattr(loader, "create_tuple_iterator"):  # mindspore.dataset.Dataset
            source = loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
        else:
            source = iter(loader)
        source = itertools.islice(source, start, None)
    for batch_idx, batch in zip(range(start, limit), source):
        yield batch_idx, to_tensors(check_batch(batch))


def group_batches(batches, full, size_for):
    """``(batch_idx, batch)`` pairs in groups for ``Trainer(steps_per_execution=full)``: a group takes
    ``size_for(batch_idx)`` batches from its first one on (asked when that batch arrives, so after the previous group
    has run). A group of ``full`` batches of one shape is yielded whole; any other (cut short by the epoch's end, a
    validation point, a batch of another shape) one batch at a time: only the 1-step and the full graph compile."""
    group, size = [], 1
    for item in batches:
        if group and _shapes(item[1]) != _shapes(group[0][1]):
            yield from ([single] for single in group)
            group = []
        if not group:
            size = size_for(item[0]) if full > 1 else 1
        group.append(item)
        if len(group) == size:
            if size == full:
                yield group
            else:
                yield from ([single] for single in group)
            group = []
    yield from ([single] for single in group)


def _shapes(batch):
    return tuple((tuple(item.shape), item.dtype) for item in batch)


def loader_length(loader):
    if hasattr(loader, "get_dataset_size"):
        return loader.get_dataset_size()
    try:
        return len(loader)
    except TypeError:
        return math.inf


def is_batch_list(value):
    """A list given as a dataloader (e.g. a list of batches) rather than a list of dataloaders."""
    return bool(value) and isinstance(value[0], tuple)


def check_batch(batch):
    if isinstance(batch, (np.ndarray, Tensor)):
        batch = (batch,)
    if not isinstance(batch, (tuple, list)):
        raise MisconfigurationError(f"a dataloader yielded a {type(batch).__name__}; batches must be tuples of numpy "
                                    "arrays or Tensors")
    for i, item in enumerate(batch):
        if not isinstance(item, (np.ndarray, Tensor)):
            raise MisconfigurationError(f"a dataloader yielded a batch whose item {i} is a {type(item).__name__}; "
                                        "batches must be tuples of numpy arrays or Tensors")
    return tuple(batch)


def to_tensors(batch):
    return tuple(x if isinstance(x, Tensor) else Tensor(x) for x in batch)


def batch_size_of(batch):
    first = batch[0]
    return int(first.shape[0]) if len(first.shape) else 1
