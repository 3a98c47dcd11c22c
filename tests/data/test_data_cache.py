"""The decoded-image cache (data/cache.py): bit-identical to the in-memory path, atomic under kills, rebuilt when the
source or the file changes (saying why), one-line errors for an unwritable folder, a full disk, a newer format."""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpmkit.cli import main
from ddpmkit.data import cache as cache_mod
from ddpmkit.data import cache_build, load_dataset
from ddpmkit.data.cache import ImageCache, entry_path
from ddpmkit.train import faults

N = 100  # 4 chunks of cache_build.CHUNK = 32


def make_folder(root: Path, n: int = N, *, grey: int = 1, sizes=((12, 12),), seed: int = 0) -> Path:
    """n PNGs of random pixels, `grey` of every 3 grey ("L"), the rest RGB; the sizes taken in turn."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        (img.convert("L") if i % 3 < grey else img).save(root / f"{i:04d}.png")
    return root


def builds(caplog) -> list[str]:
    """The 'building the image cache' lines logged so far (each says why), then forget them."""
    lines = [r.getMessage() for r in caplog.records if "building the image cache" in r.getMessage()]
    caplog.clear()
    return lines


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "images")


@pytest.fixture(autouse=True)
def _log(caplog):
    caplog.set_level(logging.WARNING, logger="ddpmkit.data")


CASES = {  # name -> (folder options, load options)
    "native size, colour wins 2 of 3": ({}, {}),
    "resized mixed sizes": ({"sizes": ((12, 16), (20, 9), (8, 8))}, {"image_size": 8}),
    "all grey, channels unset": ({"grey": 3, "sizes": ((10, 10),)}, {}),
    "grey wins 2 of 3": ({"grey": 2}, {}),  # the colour third becomes BT.601 luma
    "channels 1": ({}, {"channels": 1, "image_size": 6}),
    "channels 3 of grey files": ({"grey": 3}, {"channels": 3}),
}


@pytest.mark.parametrize("workers", [1, 2], ids=["in process", "process pool"])
@pytest.mark.parametrize("case", list(CASES))
def test_cached_images_are_bit_identical_to_the_in_memory_path(tmp_path, monkeypatch, caplog, case, workers):
    folder_options, options = CASES[case]
    root = make_folder(tmp_path / "images", **folder_options)
    monkeypatch.setattr(cache_build, "POOL_MIN", 0)
    memory = load_dataset(str(root), **options)
    cache = ImageCache(tmp_path / "cache", workers=workers, progress=False)
    cached = load_dataset(str(root), cache=cache, **options)
    assert isinstance(cached.images, np.memmap) and cached.images.dtype == np.uint8
    assert cached.images.shape == memory.images.shape and cached.labels is None and cached.name == memory.name
    np.testing.assert_array_equal(cached.images, memory.images)
    assert len(builds(caplog)) == 1
    again = load_dataset(str(root), cache=cache, **options)
    assert builds(caplog) == [] and np.array_equal(again.images, memory.images)


def entry_of(root: Path, cache_dir: Path) -> Path:
    return entry_path(cache_dir, root, "train")


def in_child(call, fault: str) -> int:
    """call() in a fork of this process with DDPMKIT_FAULT = `fault`; its exit status (-9: SIGKILLed)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            faults._hits.clear()
            os.environ[faults.ENV_VAR] = fault
            call()
            code = 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if ".tmp-" in p.name or ".trash-" in p.name)


@pytest.mark.parametrize("fault", ["cache:chunk@2", "cache:before_manifest", "cache:before_rename", "cache:swap"])
def test_a_kill_during_the_build_leaves_no_usable_cache_and_the_rerun_completes_it(tmp_path, folder, caplog,
                                                                                   fault, record_property):
    record_property("faults", 1)
    cache_dir = tmp_path / "cache"
    options = {"image_size": 8, "cache": ImageCache(cache_dir, progress=False)}
    if fault == "cache:swap":  # a swap needs an old entry to move aside: one of another --image-size
        load_dataset(str(folder), **{**options, "image_size": 6})
    assert in_child(lambda: load_dataset(str(folder), **options), fault) == -9
    entry = entry_of(folder, cache_dir)
    source = cache_mod.scan_source(folder, "train", {"image_size": 8, "channels": None, "skip_bad": False})
    assert cache_mod.open_entry(entry, source, "x")[0] is None  # nothing there passes for the new cache
    if fault != "cache:swap":
        assert not entry.exists() and leftovers(cache_dir)  # the killed build's temporary folder
    caplog.clear()
    ds = load_dataset(str(folder), **options)
    assert len(builds(caplog)) == 1 and leftovers(cache_dir) == []
    np.testing.assert_array_equal(ds.images, load_dataset(str(folder), image_size=8).images)
    record_property("faults_survived", 1)


def corrupt_truncate(entry: Path) -> None:
    with open(entry / "images.u8", "r+b") as f:
        f.truncate((entry / "images.u8").stat().st_size - 1)


def corrupt_flip(entry: Path) -> None:
    with open(entry / "images.u8", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))


def corrupt_manifest(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"format": "ddpmkit-image-cache", "vers')


@pytest.mark.parametrize("corrupt, why", [(corrupt_truncate, "truncated"), (corrupt_flip, "SHA-256 differs"),
                                          (corrupt_manifest, "manifest is unreadable")])
def test_a_truncated_or_tampered_cache_is_refused_and_rebuilt(tmp_path, folder, caplog, corrupt, why):
    cache = ImageCache(tmp_path / "cache", progress=False)
    expected = load_dataset(str(folder), cache=cache).images.copy()
    builds(caplog)
    corrupt(entry_of(folder, tmp_path / "cache"))
    ds = load_dataset(str(folder), cache=cache)
    [line] = builds(caplog)
    assert why in line
    np.testing.assert_array_equal(ds.images, expected)


def add_file(root: Path) -> None:
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "zz_new.png")


def remove_file(root: Path) -> None:
    (root / "0005.png").unlink()


def touch_file(root: Path) -> None:
    st = (root / "0007.png").stat()
    os.utime(root / "0007.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def rewrite_file(root: Path) -> None:
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(root / "0003.png")


@pytest.mark.parametrize("change, why, options", [
    (add_file, "1 file(s) added ('zz_new.png')", {}),
    (remove_file, "1 file(s) removed ('0005.png')", {}),
    (touch_file, "1 file(s) modified ('0007.png')", {}),
    (rewrite_file, "1 file(s) modified ('0003.png')", {}),
    (lambda root: None, "--image-size 12 -> 8", {"image_size": 8}),
    (lambda root: None, "--channels None -> 1", {"channels": 1}),
])
def test_a_changed_source_or_setting_rebuilds_and_says_why(tmp_path, folder, caplog, change, why, options):
    cache = ImageCache(tmp_path / "cache", progress=False)
    load_dataset(str(folder), cache=cache, image_size=12)
    assert len(builds(caplog)) == 1
    load_dataset(str(folder), cache=cache, image_size=12)
    assert builds(caplog) == []  # unchanged: mapped, not rebuilt
    change(folder)
    ds = load_dataset(str(folder), cache=cache, **{"image_size": 12, **options})
    [line] = builds(caplog)
    assert why in line, line
    np.testing.assert_array_equal(ds.images, load_dataset(str(folder), **{"image_size": 12, **options}).images)


def test_an_unwritable_cache_folder_is_one_line_naming_it_and_exit_2(tmp_path, folder, capsys, data_error):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    bad = blocker / "cache"
    data_error(lambda: load_dataset(str(folder), cache=bad), str(bad), "cannot write there", "--no-cache")
    code = main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--cache", str(bad), "--steps", "1",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(bad) in err, err
    assert blocker.read_text().startswith("a file") and not (tmp_path / "run").exists()


def test_a_full_disk_while_building_is_one_line_and_keeps_the_old_cache(tmp_path, folder, monkeypatch, data_error,
                                                                        record_property):
    record_property("faults", 1)
    cache_dir = tmp_path / "cache"
    cache = ImageCache(cache_dir, progress=False)
    load_dataset(str(folder), cache=cache, image_size=6)
    entry = entry_of(folder, cache_dir)
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    faults._hits.clear()  # hits are counted per process: the first build made four
    monkeypatch.setenv(faults.ENV_VAR, "cache:chunk@2!ENOSPC")
    data_error(lambda: load_dataset(str(folder), cache=cache, image_size=8), str(entry), "disk is full",
               "No space left on device")
    monkeypatch.delenv(faults.ENV_VAR)
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before and leftovers(cache_dir) == []
    assert load_dataset(str(folder), cache=cache, image_size=6).images.shape == (N, 6, 6, 3)
    record_property("faults_survived", 1)


def test_a_cache_from_a_newer_format_is_refused_with_one_line_and_kept(tmp_path, folder, capsys):
    cache_dir = tmp_path / "cache"
    load_dataset(str(folder), cache=ImageCache(cache_dir, progress=False))
    entry = entry_of(folder, cache_dir)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["version"] = cache_build.FORMAT_VERSION + 1
    (entry / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    # files that pass eval's early checks (they are read only after the data, whose cache is refused first)
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    (tmp_path / "inception.safetensors").write_bytes(b"")
    code = main(["eval", "--samples", str(tmp_path / "samples.npz"), "--data", str(folder), "--split", "train",
                 "--cache", str(cache_dir), "--metrics", "pr", "--inception", str(tmp_path / "inception.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(entry) in err and "newer" in err, err
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before


def test_skip_bad_lists_skipped_files_in_the_manifest_and_counts_them_on_every_run(tmp_path, folder, caplog,
                                                                                   data_error):
    (folder / "0050.png").write_bytes(b"not a png")
    cache = ImageCache(tmp_path / "cache", progress=False)
    memory = load_dataset(str(folder), skip_bad=True)
    for _ in range(2):  # the build, then a hit that decodes nothing
        caplog.clear()
        ds = load_dataset(str(folder), skip_bad=True, cache=cache)
        assert ds.num_skipped == 1 == memory.num_skipped and ds.skipped == memory.skipped
        assert any("skipped 1 bad file(s) of 100" in r.getMessage() for r in caplog.records)
        np.testing.assert_array_equal(ds.images, memory.images)
    manifest = json.loads((entry_of(folder, tmp_path / "cache") / "manifest.json").read_text())
    assert len(manifest["skipped"]) == 1 and "0050.png" in manifest["skipped"][0] and manifest["shape"][0] == N - 1
    data_error(lambda: load_dataset(str(folder), cache=cache), "0050.png")  # without --skip-bad: as in memory


def test_labels_are_stored_beside_the_images_and_checked(tmp_path, folder, monkeypatch, caplog):
    monkeypatch.setattr(cache_mod, "folder_labels",
                        lambda root, split, files: (np.array([int(p.stem) % 10 for p in files]), None))
    cache = ImageCache(tmp_path / "cache", progress=False)
    ds = load_dataset(str(folder), cache=cache)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [i % 10 for i in range(N)]
    builds(caplog)
    labels = entry_of(folder, tmp_path / "cache") / "labels.npy"
    np.save(labels, np.zeros(N, np.int64))  # tampered: well-formed, but not what the manifest hashed
    assert load_dataset(str(folder), cache=cache).labels.tolist() == [i % 10 for i in range(N)]
    assert "labels.npy does not match" in builds(caplog)[0]


def test_class_subfolders_give_the_same_labels_and_names_through_the_cache(tmp_path):
    # the folder rule (one subfolder per class, sorted names) on the cached path as on the in-memory one; an empty
    # class subfolder is still a class
    root = tmp_path / "classes"
    for i, cls in enumerate(["cat", "ant", "bee"]):
        make_folder(root / cls, n=3 + i, seed=i)
    (root / "dog").mkdir()
    memory = load_dataset(str(root), cache=False)
    cached = load_dataset(str(root), cache=ImageCache(tmp_path / "cache", progress=False))
    assert memory.class_names == cached.class_names == ["ant", "bee", "cat", "dog"]
    assert memory.labels.tolist() == cached.labels.tolist() == [0] * 4 + [1] * 5 + [2] * 3
    np.testing.assert_array_equal(memory.images, cached.images)


def test_a_waiting_rank_maps_the_builders_entry_or_names_the_builder(tmp_path, folder, data_error):
    cache_dir = tmp_path / "cache"
    waiter = ImageCache(cache_dir, rank=1, token="job1", timeout_s=0.2, progress=False)
    data_error(lambda: load_dataset(str(folder), cache=waiter), "rank 1: waited 0 s for rank 0", "failed or is "
               "still building")
    entry = entry_of(folder, cache_dir)
    note = entry.with_name(f".{entry.name}.failed-job1")
    cache_dir.mkdir()
    note.write_text("data: image cache 'x': cannot write there (No space left on device)")
    data_error(lambda: load_dataset(str(folder), cache=waiter), "rank 1: rank 0 could not build", "No space left")
    note.unlink()
    built = load_dataset(str(folder), cache=ImageCache(cache_dir, progress=False))
    np.testing.assert_array_equal(load_dataset(str(folder), cache=waiter).images, built.images)


def test_an_errno_fault_raises_instead_of_killing(monkeypatch):
    faults._hits.clear()
    monkeypatch.setenv(faults.ENV_VAR, "t:e@2!ENOSPC")
    faults.fault_point("t:e")
    with pytest.raises(OSError) as info:
        faults.fault_point("t:e")
    assert info.value.errno == 28
    faults.fault_point("t:e")


def test_array_sources_do_not_go_through_the_cache(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 8, 8), np.uint8))
    ds = load_dataset(str(tmp_path / "a.npz"), cache=tmp_path / "cache")
    assert not isinstance(ds.images, np.memmap) and not (tmp_path / "cache").exists()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_cache_and_no_cache_together_are_one_line_and_exit_2(tmp_path, folder, capsys):
    code = main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c"),
                 "--no-cache", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--cache and --no-cache" in err, err
