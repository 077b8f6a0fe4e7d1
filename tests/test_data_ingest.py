"""Sources and ingest: tiny archives in each original format -> HDF5 store -> checks."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from data_helpers import class_colour, make_cars, make_cars_train_test, make_cub, make_folder, make_sop

import kerasml
from kerasml import data
from kerasml.cli import main
from kerasml.data import IngestError, SourceError, StoreError
from kerasml.data.store import StoreWriter


def _colour_ok(store, source_offset=0):
    """Every stored image has (about) its class colour, so pixels and labels match."""
    images = store.read(np.arange(store.num_images))
    for image, label in zip(images, store.labels, strict=True):
        expected = class_colour(int(store.class_source_ids[label]) + source_offset).astype(int)
        assert np.abs(image.reshape(-1, 3).mean(0) - expected).max() < 12


def test_cub_archive_standard_split(tmp_path):
    archive, _ = make_cub(tmp_path / "raw", classes=6, per_class=3)
    result = data.ingest("cub", tmp_path / "cub.h5", source_path=archive, image_size=16, quiet=True)
    assert (result.images, result.train_classes, result.test_classes, result.skipped) == (18, 3, 3, 0)
    with data.open_store(tmp_path / "cub.h5") as store:
        assert store.image_size == 16
        assert store.class_names == [f"{c:03d}.Bird_{c}" for c in range(1, 7)]
        assert store.class_source_ids.tolist() == [1, 2, 3, 4, 5, 6]
        assert store.class_splits == ["train"] * 3 + ["test"] * 3
        assert sorted(set(store.split_labels("train").tolist())) == [0, 1, 2]
        assert sorted(set(store.split_labels("test").tolist())) == [3, 4, 5]
        assert len(store.split_rows("train")) == len(store.split_rows("test")) == 9
        assert store.provenance["split"] == "standard"
        assert store.provenance["source"] == "cub"
        assert store.provenance["kerasml_version"] == kerasml.__version__
        assert store.paths[0].startswith("001.Bird_1/")
        _colour_ok(store)


def test_cub_folder_sampled_classes_are_seeded_and_disjoint(tmp_path):
    folder, _ = make_cub(tmp_path / "raw", classes=8, per_class=2, as_archive=False)
    a = data.ingest(
        "cub", tmp_path / "a.h5", source_path=tmp_path / "raw", classes=4, seed=3, image_size=16, quiet=True
    )
    data.ingest("cub", tmp_path / "b.h5", source_path=folder, classes=4, seed=3, image_size=16, quiet=True)
    data.ingest("cub", tmp_path / "c.h5", source_path=folder, classes=4, seed=4, image_size=16, quiet=True)
    assert (a.train_classes, a.test_classes, a.images) == (2, 2, 8)
    pa, pb, pc = (data.open_store(tmp_path / f"{n}.h5").provenance for n in "abc")
    assert pa["sampled_class_ids"] == pb["sampled_class_ids"]
    assert pa["sampled_class_ids"] != pc["sampled_class_ids"]
    assert pa["seed"] == 3 and pa["classes_requested"] == 4 and pa["split"] == "sampled 50/50 by class"
    assert not set(pa["train_class_ids"]) & set(pa["test_class_ids"])
    assert sorted(pa["train_class_ids"] + pa["test_class_ids"]) == sorted(pa["sampled_class_ids"])
    store = data.open_store(tmp_path / "a.h5")
    assert sorted(store.class_source_ids[:2].tolist()) == sorted(pa["train_class_ids"])
    _colour_ok(store)


def test_cars196_mat_and_tgz(tmp_path):
    make_cars(tmp_path / "raw", classes=6, per_class=3)
    result = data.ingest("cars196", tmp_path / "cars.h5", source_path=tmp_path / "raw", image_size=12, quiet=True)
    assert (result.images, result.train_classes, result.test_classes) == (18, 3, 3)
    store = data.open_store(tmp_path / "cars.h5")
    assert store.class_names[0] == "Maker Model 1 2012"
    assert store.class_splits == ["train"] * 3 + ["test"] * 3
    assert store.read([0]).shape == (1, 12, 12, 3)
    _colour_ok(store, source_offset=100)
    # the extracted car_ims/ folder and the .mat path itself work too
    make_cars(tmp_path / "ext", classes=4, per_class=2, extracted=True)
    result = data.ingest(
        "cars196",
        tmp_path / "e.h5",
        source_path=tmp_path / "ext" / "cars_annos.mat",
        classes=4,
        image_size=12,
        quiet=True,
    )
    assert result.images == 8


def _cars_store(tmp_path, source, name, classes=None):
    out = tmp_path / f"{name}.h5"
    data.ingest("cars196", out, source_path=source, classes=classes, image_size=12, quiet=True)
    return data.open_store(out)


@pytest.mark.parametrize("layout", ["folders", "kaggle", "archives", "zip"])
def test_cars196_train_test_release_gives_the_same_classes(tmp_path, layout):
    original = make_cars(tmp_path / "original", classes=6, per_class=3)
    release = make_cars_train_test(tmp_path / layout, classes=6, per_class=3, layout=layout)
    for classes in (None, 4):  # the standard split and a seeded draw of 4 classes
        a = _cars_store(tmp_path, original, f"a{classes}", classes)
        b = _cars_store(tmp_path, release, f"b{classes}", classes)
        assert b.class_names == a.class_names and b.class_splits == a.class_splits
        assert b.class_source_ids.tolist() == a.class_source_ids.tolist()
        assert np.bincount(b.labels).tolist() == np.bincount(a.labels).tolist()
        assert b.num_images == a.num_images == (18 if classes is None else 12)
        _colour_ok(b, source_offset=100)
    assert b.paths[0].startswith(("cars_train/", "cars_test/"))


def test_cars196_original_release_in_one_zip_and_missing_parts(tmp_path):
    make_cars(tmp_path / "cvgl", classes=4, per_class=2, zipped=True)
    for source in (tmp_path / "cvgl", tmp_path / "cvgl" / "CARS196.zip"):  # the folder or the zip itself
        store = _cars_store(tmp_path, source, source.name)
        assert store.num_images == 8 and store.class_names[0] == "Maker Model 1 2012"
    # the devkit's unlabelled cars_test_annos.mat is not enough: the error says which file to add
    release = make_cars_train_test(tmp_path / "nolabels", classes=4, per_class=2)
    (release / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(SourceError, match=r"holds no class labels\. Add cars_test_annos_withlabels\.mat"):
        data.ingest("cars196", tmp_path / "x.h5", source_path=release, quiet=True)
    release = make_cars_train_test(tmp_path / "noimages", classes=4, per_class=2)
    (release / "cars_train").rename(release / "elsewhere")
    with pytest.raises(SourceError, match="cars_train/ images"):
        data.ingest("cars196", tmp_path / "x.h5", source_path=release, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="neither release"):
        data.ingest("cars196", tmp_path / "x.h5", source_path=tmp_path / "empty", quiet=True)
    assert not (tmp_path / "x.h5").exists()


def test_sop_zip_standard_split(tmp_path):
    archive, train_ids, test_ids = make_sop(tmp_path / "raw")
    result = data.ingest("sop", tmp_path / "sop.h5", source_path=archive, image_size=16, quiet=True)
    store = data.open_store(tmp_path / "sop.h5")
    assert store.class_source_ids.tolist() == train_ids + test_ids
    assert (result.train_classes, result.test_classes) == (len(train_ids), len(test_ids))
    assert store.class_names[0] == "chair_final/111000000001"
    assert store.summary()["splits"]["train"]["images_per_class_min"] == 2
    _colour_ok(store, source_offset=200)


def test_folder_source_and_train_test_layout(tmp_path):
    make_folder(tmp_path / "flat", classes=4, per_class=3)
    result = data.ingest("folder", tmp_path / "f.h5", source_path=tmp_path / "flat", image_size=16, quiet=True)
    assert (result.images, result.train_classes, result.test_classes) == (12, 2, 2)
    make_folder(tmp_path / "split", classes=4, per_class=2, split_folders=True)
    data.ingest("folder", tmp_path / "s.h5", source_path=tmp_path / "split", image_size=16, quiet=True)
    store = data.open_store(tmp_path / "s.h5")
    assert store.class_names == ["train/class_0", "train/class_1", "test/class_2", "test/class_3"]
    assert store.class_splits == ["train", "train", "test", "test"]


def test_digits_standard_split_and_default_size(tmp_path):
    result = data.ingest("digits", tmp_path / "d.h5", quiet=True)
    assert (result.images, result.train_classes, result.test_classes) == (1797, 5, 5)
    store = data.open_store(tmp_path / "d.h5")
    assert store.image_size == 32
    assert store.class_names == [str(i) for i in range(10)]
    assert set(store.class_source_ids[store.split_labels("train")].tolist()) == {0, 1, 2, 3, 4}


def test_procedural_is_seeded(tmp_path):
    kwargs = dict(classes=6, image_size=24, quiet=True, source_options={"images_per_class": 3})
    data.ingest("procedural", tmp_path / "a.h5", seed=5, **kwargs)
    data.ingest("procedural", tmp_path / "b.h5", seed=5, **kwargs)
    data.ingest("procedural", tmp_path / "c.h5", seed=6, **kwargs)
    a, b, c = (data.open_store(tmp_path / f"{n}.h5") for n in "abc")
    assert a.num_images == 18 and a.image_size == 24
    assert np.array_equal(a.read(range(18)), b.read(range(18)))
    assert not np.array_equal(a.read(range(18)), c.read(range(18)))
    assert len(set(a.class_names)) == 6
    source = data.get_source("procedural", classes=40000, images_per_class=1)
    assert len(set(source.catalog().class_names)) == 40000


def test_fit_crop_and_pad():
    from kerasml.data.ingestion import fit_image

    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = 255  # a white left quarter
    crop = fit_image(image, 10, "crop")
    pad = fit_image(image, 10, "pad")
    assert crop.shape == pad.shape == (10, 10, 3)
    assert crop[:, 0].max() == 0  # the left quarter is cropped away
    assert pad[0].max() == 0 and pad[5, 0].min() == 255  # black bars, whole width kept


def test_unreadable_images_skipped_reported_or_strict(tmp_path):
    archive, _ = make_cub(tmp_path / "raw", classes=4, per_class=3, corrupt=2)
    result = data.ingest("cub", tmp_path / "c.h5", source_path=archive, image_size=16, quiet=True)
    assert result.skipped == 2 and result.images == 10
    assert result.skipped_paths[0].startswith("001.Bird_1/")
    assert data.open_store(tmp_path / "c.h5").provenance["skipped_count"] == 2
    with pytest.raises(IngestError, match="--strict"):
        data.ingest("cub", tmp_path / "s.h5", source_path=archive, image_size=16, strict=True, quiet=True)
    assert list(tmp_path.glob("s.h5*")) == [] and list(tmp_path.glob(".s.h5*")) == []


def test_bad_requests_raise_clear_errors(tmp_path):
    archive, _ = make_cub(tmp_path / "raw", classes=4, per_class=2)
    with pytest.raises(SourceError, match=r"from 2 to 4"):
        data.ingest("cub", tmp_path / "x.h5", source_path=archive, classes=5, quiet=True)
    with pytest.raises(SourceError, match="kerasml download cub"):
        data.ingest("cub", tmp_path / "x.h5", source_path=tmp_path / "nowhere", quiet=True)
    with pytest.raises(SourceError, match="Unknown dataset"):
        data.get_source("imagenet")
    data.ingest("cub", tmp_path / "x.h5", source_path=archive, image_size=16, quiet=True)
    with pytest.raises(StoreError, match="--overwrite"):
        data.ingest("cub", tmp_path / "x.h5", source_path=archive, image_size=16, quiet=True)


def test_interrupted_ingest_leaves_nothing_info_accepts(tmp_path, monkeypatch, capsys):
    import kerasml.data.ingestion as ingest_module

    calls = {"n": 0}
    original = ingest_module._decode_fit

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(ingest_module, "_decode_fit", interrupted)
    out = tmp_path / "digits.h5"
    with pytest.raises(KeyboardInterrupt):
        data.ingest("digits", out, quiet=True, workers=1)
    assert list(tmp_path.iterdir()) == []  # no final file, temporary file removed
    monkeypatch.undo()

    # a hard kill leaves the temporary file without its `complete` mark: never accepted
    writer = StoreWriter(out, 8)
    writer.append(np.zeros((8, 8, 3), np.uint8))
    writer._file.close()
    crashed = writer.tmp_path
    assert main(["info", str(crashed)]) == 2
    assert "did not finish" in capsys.readouterr().err
    with pytest.raises(StoreError, match="did not finish"):
        data.open_store(crashed)
    # a truncated copy of a complete store is refused too
    data.ingest("digits", out, quiet=True, image_size=8)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    assert main(["info", str(truncated)]) == 2
    assert "not a valid kerasml store" in capsys.readouterr().err


def test_info_rejects_other_files(tmp_path, capsys):
    (tmp_path / "text.h5").write_text("hello")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    for name in ("text.h5", "other.h5", "missing.h5"):
        assert main(["info", str(tmp_path / name)]) == 2
        out = capsys.readouterr().err
        assert "error:" in out and "Traceback" not in out


def test_cli_ingest_and_info(tmp_path, capsys, monkeypatch):
    make_cub(tmp_path / "raw", classes=6, per_class=2)
    monkeypatch.chdir(tmp_path)
    # defaults: --from data/raw is missing here -> a message, exit 2
    assert main(["ingest", "cub", "--classes", "4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    (tmp_path / "raw").rename(tmp_path / "data" / "raw")
    assert main(["ingest", "cub", "--classes", "4", "--image-size", "16", "--seed", "1"]) == 0
    assert (tmp_path / "data" / "cub-4-seed1.h5").is_file()  # the documented default --out
    capsys.readouterr()
    assert main(["info", "data/cub-4-seed1.h5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 8 and summary["classes"] == 4
    assert summary["splits"]["train"]["classes"] == 2
    assert summary["provenance"]["seed"] == 1
    assert main(["info", "data/cub-4-seed1.h5"]) == 0
    assert "sampled 50/50" in capsys.readouterr().out
    assert main(["ingest", "procedural", "--images-per-class", "2", "--classes", "4", "--image-size", "16"]) == 0
    assert main(["ingest", "digits", "--images-per-class", "2"]) == 2
    assert main(["ingest", "digits", "--classes", "11"]) == 2
    assert "from 2 to 10" in capsys.readouterr().err


def test_default_store_names_read_back_to_their_commands():
    assert data.default_out("cars196", 20).as_posix() == "data/cars196-20.h5"
    assert data.default_out("cub").as_posix() == "data/cub.h5"
    assert data.default_out("sop", 2300, seed=2).as_posix() == "data/sop-2300-seed2.h5"
    from kerasml.data.sources import parse_store_path, store_commands

    for name, classes, seed in (("cars196", 20, 0), ("cub", None, 0), ("sop", 2300, 2), ("procedural", 200, 0)):
        assert parse_store_path(data.default_out(name, classes, seed=seed)) == (name, classes, seed)
    assert parse_store_path("data/cars19620.h5") == ("cars196", 20, 0)  # the names before 0.4
    assert parse_store_path("runs/my_store.h5") is None
    assert store_commands("data/sop-2300-seed2.h5") == [
        "kerasml download sop --to data/raw",
        "kerasml ingest sop --classes 2300 --seed 2",
    ]
    assert store_commands("data/digits.h5") == ["kerasml ingest digits"]
    assert store_commands("elsewhere/cub-20.h5")[-1] == "kerasml ingest cub --classes 20 --out elsewhere/cub-20.h5"
    assert store_commands("data/folder-8.h5")[-1].startswith("kerasml ingest folder --from YOUR_IMAGE_FOLDER")


def test_missing_store_names_its_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="does not exist") as error:
        data.open_store("data/cars196-20.h5")
    message = str(error.value)
    assert "`kerasml download cars196 --to data/raw`, then `kerasml ingest cars196 --classes 20`" in message
    assert "official host is offline" in message
    assert main(["info", "mine.h5"]) == 2
    assert "kerasml ingest NAME --out mine.h5" in capsys.readouterr().err


_KILLED_WRITER = """
import sys, time
import numpy as np
from kerasml.data.store import StoreWriter
writer = StoreWriter(sys.argv[1], 8)
for _ in range(50):
    writer.append(np.zeros((8, 8, 3), np.uint8))
writer._file.flush()
print(writer.tmp_path, flush=True)
time.sleep(120)
"""


def _writer_process(out):
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True, cwd=out.parent
    )
    line = process.stdout.readline().strip()
    assert line, "the writer did not start"
    return process, out.parent / line.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]


def test_stale_partial_of_a_killed_ingest_is_removed_by_the_next(tmp_path, capsys):
    out = tmp_path / "digits.h5"
    running, held = _writer_process(out)  # a live ingest of the same store: never touched
    killed, stale = _writer_process(out)
    try:
        killed.kill()  # SIGKILL / TerminateProcess: no cleanup runs
        killed.wait(timeout=30)
        assert stale.is_file() and held.is_file() and stale.name.startswith(".digits.h5.")
        result = data.ingest("digits", out, image_size=8, quiet=True)
        assert [path for path, _ in result.removed_partials] == [stale]
        assert result.removed_partials[0][1] > 0 and result.held_partials == [held]
        assert not stale.exists() and held.exists()
    finally:
        running.kill()
        running.wait(timeout=30)
    assert main(["ingest", "digits", "--out", str(out), "--overwrite", "--image-size", "8"]) == 0
    assert f"removed {held}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.h5"]
