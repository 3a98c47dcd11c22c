"""The long-job layer in one process: the same rows in memory, on shards and with any batch size; a job stopped
midway continues from its shards; truncated, altered and foreign shards are redone, never read."""

import numpy as np
import pytest

from ddpmkit.jobs import Job, remove_shards, run_job, shard_root
from ddpmkit.noise import ImageNoise


class Work:
    """Rows that depend only on (seed, i), a log of the images computed, and an optional crash at call k."""

    def __init__(self, seed=0, crash_at=None):
        self.seed, self.crash_at, self.calls = seed, crash_at, []

    def __call__(self, index):
        self.calls.append((int(index[0]), int(index[-1]) + 1))
        if len(self.calls) == self.crash_at:
            raise RuntimeError("crash")
        return {"x": ImageNoise(self.seed, index).randn((len(index), 3)).numpy(), "i": index.copy()}


def job(tmp_path, work, batch_size, n=23, seed=0):
    return Job("test", n, {"seed": seed}, work, batch_size=batch_size, root=shard_root(tmp_path / "out.npz"))


@pytest.fixture(scope="module")
def reference():
    return run_job(Job("test", 23, {"seed": 0}, Work(), batch_size=23))


def test_the_same_rows_in_memory_on_shards_and_with_any_batch_size(tmp_path, reference):
    assert reference["x"].shape == (23, 3) and np.array_equal(reference["i"], np.arange(23))
    for batch_size in (1, 4, 7):
        j = job(tmp_path, Work(), batch_size)
        rows = run_job(j)
        assert all(np.array_equal(rows[k], reference[k]) for k in reference)
        assert len(list(j.folder.iterdir())) == -(-23 // batch_size)
        remove_shards(j)
        assert not (tmp_path / "out.npz.shards").exists()


def test_a_job_stopped_midway_continues_from_its_shards_with_another_batch_size(tmp_path, reference):
    with pytest.raises(RuntimeError, match="crash"):
        run_job(job(tmp_path, Work(crash_at=3), batch_size=4))  # images 0..7 done, 8..11 lost
    work = Work()
    rows = run_job(job(tmp_path, work, batch_size=5))
    assert work.calls == [(8, 13), (13, 18), (18, 23)]
    assert all(np.array_equal(rows[k], reference[k]) for k in reference)


def _rewrite(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_truncated_altered_and_foreign_shards_are_redone_never_read(tmp_path, reference, capsys):
    run_job(job(tmp_path, Work(), batch_size=5))
    other = job(tmp_path / "other", Work(seed=1), batch_size=5, seed=1)  # another seed: another key
    run_job(other)
    folder = job(tmp_path, Work(), 5).folder
    shards = sorted(folder.iterdir())
    shards[0].write_bytes(shards[0].read_bytes()[:300])  # truncated
    _rewrite(shards[1], lambda a: a["x"].__setitem__((0, 0), a["x"][0, 0] + 1e-7))  # altered, digest kept
    (other.folder / shards[2].name).replace(shards[2])  # the same images of another job
    (folder / "000000020-000000022.npz").write_bytes(shards[4].read_bytes())  # rows of 20..22 named 20..21
    work = Work()
    rows = run_job(job(tmp_path, work, batch_size=5))
    err = capsys.readouterr().err
    assert sorted(work.calls) == [(0, 5), (5, 10), (10, 15)]
    assert all(np.array_equal(rows[k], reference[k]) for k in reference)
    for words in ("unreadable", "altered", "from another job", "rows do not match its name"):
        assert words in err, err


def test_a_conditional_run_s_label_i_depends_only_on_the_seed_and_i():
    from ddpmkit.classes import labels_for

    names, counts = [str(c) for c in range(10)], list(range(1, 11))
    long = labels_for(50, None, names, counts, seed=3)
    assert np.array_equal(labels_for(17, None, names, counts, seed=3), long[:17])
    assert not np.array_equal(labels_for(50, None, names, counts, seed=4), long)
    assert np.array_equal(labels_for(7, ["1", "2", "5"], names, None, seed=3), [1, 2, 5, 1, 2, 5, 1])


def test_a_full_disk_is_one_line_naming_the_shard_folder(tmp_path, monkeypatch):
    import errno

    from ddpmkit.errors import UserError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(UserError, match="out.npz.shards.*No space left on device.*resumes"):
        run_job(job(tmp_path, Work(), batch_size=5))
