import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.datasets.miniature import generate
from pipeline.datasets.miniature.formats import encode_jpeg, encode_png, write_zip
from pipeline.datasets.readers import list_samples, read_sample
from pipeline.datasets.shards import (Digests, SplitStream, TrainStream, load_split, prepare_dataset, read_manifest,
                                      read_samples, shard_paths, split_loader)
from pipeline.datasets.specs import cityscapes_palette, get_spec, get_view
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    generate(root, 3, {"ade20k": {"train": 5, "val": 3}, "cityscapes": {"train": 3, "val": 2}})
    return root


def _tar_members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


@pytest.mark.parametrize("dataset", ["ade20k", "cityscapes"])
def test_roundtrip_keys_bytes_labels_and_checksums(mini, tmp_path, dataset):
    out = tmp_path / "prepared"
    manifest = prepare_dataset(dataset, mini / dataset, out, shard_size=2, workers=2)
    assert manifest == read_manifest(out)
    spec = get_spec(dataset)
    assert manifest["classes"] == list(spec.classes) and manifest["ignore_index"] == 255
    for split in spec.splits:
        refs = list_samples(dataset, mini / dataset, split)
        entry = manifest["splits"][split]
        assert entry["count"] == len(refs)
        assert entry["shards"] == [f"{split}-{i:06d}.tar" for i in range((len(refs) + 1) // 2)]
        members = {}
        for name in entry["shards"]:
            data = (out / name).read_bytes()
            assert entry["sha256"][name] == hashlib.sha256(data).hexdigest()
            members.update(_tar_members(str(out / name)))
        ext = "jpg" if dataset == "ade20k" else "png"
        assert sorted(members) == sorted(f"{r.key}.{e}" for r in refs for e in (ext, "label.png"))
        for ref in refs:
            raw = read_sample(ref)
            assert members[f"{ref.key}.{ext}"] == raw.image
            label = np.array(Image.open(io.BytesIO(members[f"{ref.key}.label.png"])))
            assert (label == spec.lut[raw.label]).all()
        loaded = load_split(out, split)
        assert [key for key, _, _ in loaded] == [r.key for r in refs]
        for (key, image, label), ref in zip(loaded, refs):
            raw = read_sample(ref)
            assert image.dtype == torch.uint8 and label.dtype == torch.uint8
            assert (label.numpy() == spec.lut[raw.label]).all()
            decoded = np.array(Image.open(io.BytesIO(raw.image)).convert("RGB"))
            assert image.shape == (3, *decoded.shape[:2])
            if ext == "png":
                assert (image.permute(1, 2, 0).numpy() == decoded).all()


def _ade_folder(root: Path, labels: list[np.ndarray], sizes=None) -> None:
    """Extracted ADE20K: one training image per label (of the label's size unless `sizes`
    gives HxW) and one validation image."""
    rng = np.random.default_rng(0)
    sizes = sizes or [label.shape for label in labels]
    samples = [("training", "train", i, label, size) for i, (label, size) in enumerate(zip(labels, sizes), 1)]
    samples.append(("validation", "val", 1, np.ones((4, 4), np.uint8), (4, 4)))
    for sub, prefix, i, label, (h, w) in samples:
        base = root / "ADEChallengeData2016"
        image = encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for path, data in ((base / "images" / sub / f"ADE_{prefix}_{i:08d}.jpg", image),
                           (base / "annotations" / sub / f"ADE_{prefix}_{i:08d}.png", encode_png(label))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def test_single_valued_labels_are_kept(tmp_path):
    _ade_folder(tmp_path / "src", [np.full((4, 5), 3, np.uint8), np.zeros((4, 5), np.uint8)])
    manifest = prepare_dataset("ade20k", tmp_path / "src", tmp_path / "out", 8, 1)
    assert manifest["splits"]["train"]["count"] == 2
    labels = [label for _, _, label in load_split(tmp_path / "out", "train")]
    assert labels[0].unique().tolist() == [2] and labels[1].unique().tolist() == [255]


def test_label_value_outside_mapping_names_file_and_value(tmp_path):
    bad = np.full((4, 5), 3, np.uint8)
    bad[0, 0] = 200
    _ade_folder(tmp_path / "src", [np.ones((4, 5), np.uint8), bad])
    with pytest.raises(DataError, match=r"ADE_train_00000002\.png.*\[200\]"):
        prepare_dataset("ade20k", tmp_path / "src", tmp_path / "out", 8, 2)


def test_size_mismatch_names_both_files(tmp_path):
    _ade_folder(tmp_path / "src", [np.ones((4, 5), np.uint8)], sizes=[(4, 6)])
    with pytest.raises(DataError, match=r"ADE_train_00000001\.png.*5x4.*ADE_train_00000001\.jpg.*6x4"):
        prepare_dataset("ade20k", tmp_path / "src", tmp_path / "out", 8, 1)


def test_gta5_label_resized_nearest_to_image(tmp_path):
    rng = np.random.default_rng(1)
    small = rng.choice(np.array([7, 8, 11, 26, 0], np.uint8), (4, 6))
    image = rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)
    write_zip(tmp_path / "01_images.zip", {"images/00001.png": encode_png(image)})
    write_zip(tmp_path / "01_labels.zip", {"labels/00001.png": encode_png(small, cityscapes_palette())})
    prepare_dataset("gta5", tmp_path, tmp_path / "out", 8, 1)
    [(key, img, label)] = load_split(tmp_path / "out", "train")
    expected = np.repeat(np.repeat(get_spec("gta5").lut[small], 2, 0), 2, 1)
    assert key == "00001" and (img.permute(1, 2, 0).numpy() == image).all()
    assert (label.numpy() == expected).all()


def test_failed_prepare_leaves_earlier_output_intact(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _ade_folder(src, [np.ones((4, 5), np.uint8), np.full((4, 5), 2, np.uint8)])
    prepare_dataset("ade20k", src, out, 1, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (src / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png").write_bytes(
        encode_png(np.full((4, 5), 250, np.uint8)))
    with pytest.raises(DataError):
        prepare_dataset("ade20k", src, out, 1, 2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_manifest_and_split_errors(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)
    _ade_folder(tmp_path / "src", [np.ones((4, 5), np.uint8)])
    prepare_dataset("ade20k", tmp_path / "src", tmp_path / "out", 8, 1)
    assert shard_paths(tmp_path / "out", "train") == [str(tmp_path / "out" / "train-000000.tar")]
    with pytest.raises(DataError, match=r"'test'.*\['train', 'val'\]"):
        shard_paths(tmp_path / "out", "test")


def test_load_split_with_a_view_remaps_labels(tmp_path):
    raw = np.array([[0, 1, 2, 20], [255, 15, 0, 7]], np.uint8)
    base = "VOCdevkit/VOC2012"
    files = {f"{base}/JPEGImages/2007_000032.jpg": encode_jpeg(np.zeros((2, 4, 3), np.uint8)),
             f"{base}/SegmentationClass/2007_000032.png": encode_png(raw),
             f"{base}/ImageSets/Segmentation/train.txt": b"2007_000032\n",
             f"{base}/ImageSets/Segmentation/val.txt": b"2007_000032\n"}
    write_zip(tmp_path / "VOCtrainval_11-May-2012.zip", files)
    prepare_dataset("pascal_voc", tmp_path, tmp_path / "out", 8, 1)
    [(_, _, label)] = load_split(tmp_path / "out", "val")
    assert label.tolist() == raw.tolist()
    [(key, _, label)] = load_split(tmp_path / "out", "val", get_view("pascal_voc20"))
    assert key == "2007_000032" and label.dtype == torch.uint8
    assert label.tolist() == [[255, 0, 1, 19], [255, 14, 255, 6]]
    with pytest.raises(DataError, match=r"manifest\.json.*'pascal_voc'.*'pascal_context59'"):
        load_split(tmp_path / "out", "val", get_view("pascal_context59"))


def test_split_loader_keeps_the_manifest_order_with_any_workers_and_shares(mini, tmp_path):
    prepare_dataset("ade20k", mini / "ade20k", tmp_path / "out", shard_size=2, workers=1)
    everything = load_split(tmp_path / "out", "train")
    assert len(everything) == 5
    for workers, rank, world_size in [(0, 0, 1), (1, 0, 1), (2, 0, 1), (2, 0, 2), (2, 1, 2), (0, 2, 3)]:
        loader = split_loader(tmp_path / "out", "train", workers, torch.device("cpu"), rank=rank,
                              world_size=world_size)
        share = everything[rank::world_size]
        assert len(loader) == len(share) and loader.dataset.keys() == [key for key, _, _ in share]
        got = list(loader)
        assert [key for key, _, _ in got] == [key for key, _, _ in share]
        assert all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(got, share))
    assert isinstance(loader.dataset, SplitStream)


# ---------------------------------------------------------------- TrainStream

def _numbered_shards(root: Path, sizes: list[int]) -> list[str]:
    """Shards whose sample i has a 2x2 label filled with i, so outputs identify samples."""
    paths, i = [], 0
    for s, size in enumerate(sizes):
        path = str(root / f"train-{s:06d}.tar")
        with wds.TarWriter(path) as writer:
            for _ in range(size):
                writer.write({"__key__": f"s{i:04d}", "png": encode_png(np.full((2, 2, 3), i, np.uint8)),
                              "label.png": encode_png(np.full((2, 2), i, np.uint8))})
                i += 1
        paths.append(path)
    return paths


def _identify(image, label, generator):
    """Sample id plus one draw from the generator (to check its seeding)."""
    assert image.shape == (3, 2, 2) and (image == label[0, 0]).all()
    return int(label[0, 0]), float(torch.rand((), generator=generator))


def _take(stream, n, workers=0):
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    out = []
    for item in loader:
        out.append((int(item[0]), float(item[1])))
        if len(out) == n:
            return out


def test_stream_is_deterministic_and_reshuffles_each_epoch(tmp_path):
    shards = _numbered_shards(tmp_path, [4, 4, 4])
    first = _take(TrainStream(shards, _identify, seed=5, shuffle_buffer=6), 24)
    assert first == _take(TrainStream(shards, _identify, seed=5, shuffle_buffer=6), 24)
    ids, draws = [i for i, _ in first], [d for _, d in first]
    assert sorted(ids[:12]) == sorted(ids[12:]) == list(range(12))
    assert ids[:12] != ids[12:] and ids[:12] != sorted(ids[:12])
    assert len(set(draws)) == 24  # the transform's generator is reseeded per epoch
    other = _take(TrainStream(shards, _identify, seed=6, shuffle_buffer=6), 12)
    assert [i for i, _ in other] != ids[:12] and {d for _, d in other}.isdisjoint(draws)


@pytest.mark.parametrize("sizes", [[3, 3, 3, 3], [7]])
def test_workers_split_shards_or_samples(tmp_path, sizes):
    shards = _numbered_shards(tmp_path, sizes)
    total = sum(sizes)
    run = _take(TrainStream(shards, _identify, seed=1, shuffle_buffer=4), total if len(sizes) > 1 else 8, workers=2)
    ids = [i for i, _ in run]
    if len(sizes) > 1:  # 2 shards per worker: one epoch of both workers covers everything once
        assert sorted(ids) == list(range(total))
    else:  # 1 shard: workers keep even / odd indices; epoch 0 gives 4 + 3 samples
        evens, odds = ids[0::2], ids[1::2]
        assert sorted(evens) == [0, 2, 4, 6] and sorted(odds[:3]) == [1, 3, 5]
    assert run == _take(TrainStream(shards, _identify, seed=1, shuffle_buffer=4), len(run), workers=2)


def test_resampling_reads_whole_shards_only_when_they_are_fewer_than_the_consumers(tmp_path):
    """Web-scale shards (`resample`): a worker draws whole shards with replacement instead of keeping every
    consumers-th sample; with enough shards (the miniature's one consumer) nothing changes."""
    one = _numbered_shards(tmp_path, [7])
    run = _take(TrainStream(one, _identify, seed=1, shuffle_buffer=4, resample=True), 40, workers=2)
    assert run == _take(TrainStream(one, _identify, seed=1, shuffle_buffer=4, resample=True), 40, workers=2)
    first, second = [i for i, _ in run[0::2]], [i for i, _ in run[1::2]]
    assert set(first) == set(second) == set(range(7)) and first != second  # not the even / odd split
    (tmp_path / "many").mkdir()
    many = _numbered_shards(tmp_path / "many", [3, 3, 3])
    assert (_take(TrainStream(many, _identify, seed=1, resample=True), 18)
            == _take(TrainStream(many, _identify, seed=1), 18))


def test_ranks_partition_each_epoch(tmp_path):
    shards = _numbered_shards(tmp_path, [2, 2, 2, 2])
    seen = [{i for i, _ in _take(TrainStream(shards, _identify, seed=0, rank=r, world_size=2), 4)}
            for r in range(2)]
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(8))
    (tmp_path / "one").mkdir()
    one_shard = _numbered_shards(tmp_path / "one", [5])
    seen = [[i for i, _ in _take(TrainStream(one_shard, _identify, seed=0, rank=r, world_size=2), 2)]
            for r in range(2)]
    assert {i % 2 for i in seen[0]} == {0} and {i % 2 for i in seen[1]} == {1}


def test_resampling_with_fewer_shards_than_ranks_x_workers(tmp_path):
    """3 shards, 2 ranks x 2 workers (4 consumers), web-scale: every consumer draws whole shards, its own draws,
    the same ones on every run; the fallback for exact epochs (COCO) still partitions each epoch's samples."""
    shards = _numbered_shards(tmp_path, [4, 4, 4])
    runs = [_take(TrainStream(shards, _identify, seed=2, shuffle_buffer=4, rank=r, world_size=2, resample=True),
                  48, workers=2) for r in range(2)]
    assert runs[0] == _take(TrainStream(shards, _identify, seed=2, shuffle_buffer=4, rank=0, world_size=2,
                                        resample=True), 48, workers=2)
    consumers = [[i for i, _ in run[w::2]] for run in runs for w in range(2)]  # the loader alternates its workers
    # whole shards (every position in a shard, not every 4th sample), more than one of them, from the 12 samples
    assert all({i % 4 for i in ids} == set(range(4)) and len({i // 4 for i in ids}) > 1 and set(ids) <= set(range(12))
               for ids in consumers)
    assert len({tuple(ids) for ids in consumers}) == 4
    exact = [_take(TrainStream(shards, _identify, seed=2, rank=r, world_size=2), 6, workers=2) for r in range(2)]
    assert sorted(i for run in exact for i, _ in run) == list(range(12))


def _digests(shards: list[str]) -> Digests:
    return Digests({s: hashlib.sha256(Path(s).read_bytes()).hexdigest() for s in shards}, "concepts")


def _edit_member(shard: str) -> None:
    """The last byte of the shard's first label.png changed: the tar still reads, same size, other content."""
    data = bytearray(Path(shard).read_bytes())
    with tarfile.open(shard) as tf:
        member = next(m for m in tf if m.name.endswith(".label.png"))
    data[member.offset_data + member.size - 1] ^= 0xFF
    Path(shard).write_bytes(bytes(data))


def test_read_samples_checks_each_shard_at_its_end(tmp_path):
    shards = _numbered_shards(tmp_path, [3, 2])
    digests = _digests(shards)
    assert list(read_samples(shards, digests)) == list(read_samples(shards))
    assert [s["__key__"] for s in read_samples(shards)] == [f"s{i:04d}" for i in range(5)]
    _edit_member(shards[0])
    stream, keys = read_samples(shards, digests), []
    with pytest.raises(DataError, match=rf"^{shards[0]}: sha256 differs from the one {tmp_path / 'manifest.json'} "
                                        rf"recorded \(truncated or modified since concepts wrote it: expected "
                                        rf"{digests.sha256[shards[0]]}, found [0-9a-f]{{64}} when read to its end, "
                                        r"after training on its samples: once it is rewritten, restart that training "
                                        r"with --fresh\); re-run: dvc repro -f -s concepts$"):
        for sample in stream:
            keys.append(sample["__key__"])
    assert keys == ["s0000", "s0001", "s0002"]  # the edited shard's samples, then the error; none of the next shard


@pytest.mark.parametrize("resample", [False, True])
def test_a_stream_with_digests_stops_on_an_edited_shard(tmp_path, resample):
    """Whether the consumers split the shards or resample them, an edited shard stops the stream, naming it."""
    shards = _numbered_shards(tmp_path, [3, 3])
    digests = _digests(shards)
    stream = TrainStream(shards, _identify, seed=0, shuffle_buffer=2, resample=resample, digests=digests)
    assert _take(stream, 12, workers=3 if resample else 0)  # 3 consumers > 2 shards: resampled
    _edit_member(shards[1])
    with pytest.raises(DataError, match=rf"{shards[1]}: sha256 differs"):
        _take(stream, 12, workers=3 if resample else 0)
