"""The resumable DataLoader."""
import numpy as np
import pytest

from msforge import DataLoader, DataModule


class Squares:
    def __init__(self, n):
        self.n = n
        self.epochs = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.array([i], np.int64), np.array([i * i], np.int64)

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def ids(loader):
    return [b[0].ravel().tolist() for b in loader]


def test_batches_cover_the_dataset_in_order_without_shuffle():
    loader = DataLoader(Squares(10), batch_size=4)
    assert len(loader) == 3 and ids(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = next(iter(loader))
    assert x.shape == (4, 1) and (y == x * x).all()
    assert len(DataLoader(Squares(10), 4, drop_last=True)) == 2


def test_shuffle_is_a_seeded_permutation_per_epoch():
    a, b = DataLoader(Squares(20), 5, shuffle=True, seed=3), DataLoader(Squares(20), 5, shuffle=True, seed=3)
    first = ids(a)
    assert first == ids(b) and sorted(sum(first, [])) == list(range(20)) and first != ids(DataLoader(Squares(20), 5))
    a.set_epoch(1)
    assert ids(a) != first and a.dataset.epochs == [1]
    assert ids(DataLoader(Squares(20), 5, shuffle=True, seed=4)) != first


@pytest.mark.parametrize("workers, prefetch", [(0, 0), (0, 2), (3, 2)])
def test_resume_mid_epoch_gives_the_remaining_batches(workers, prefetch):
    full = DataLoader(Squares(30), 4, shuffle=True, seed=1, num_workers=workers, prefetch=prefetch)
    full.set_epoch(2)
    expected = ids(full)
    loader = DataLoader(Squares(30), 4, shuffle=True, seed=1, num_workers=workers, prefetch=prefetch)
    loader.set_epoch(2)
    it = iter(loader)
    seen = [next(it)[0].ravel().tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_consumed": 3, "seed": 1}
    resumed = DataLoader(Squares(30), 4, shuffle=True, seed=1, num_workers=workers, prefetch=prefetch)
    resumed.load_state_dict(state)
    assert seen + ids(resumed) == expected


def test_shards_are_disjoint_equal_and_cover_everything():
    shards = []
    for rank in range(3):
        loader = DataLoader(Squares(31), 4, shuffle=True, seed=0)
        loader.shard(rank, 3)
        shards.append(sum(ids(loader), []))
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    assert set().union(*shards) == set(range(31))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the wrap-around padding may repeat


def test_errors_in_the_dataset_reach_the_consumer():
    class Broken(Squares):
        def __getitem__(self, i):
            if i == 5:
                raise KeyError("sample 5 is missing")
            return super().__getitem__(i)

    with pytest.raises(KeyError, match="sample 5"):
        ids(DataLoader(Broken(10), 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size=0"):
        DataLoader(Squares(3), 0)
    with pytest.raises(TypeError, match="map-style"):
        DataLoader(iter([1, 2]), 1)
    with pytest.raises(NotImplementedError, match="train_dataloader"):
        DataModule().train_dataloader()
