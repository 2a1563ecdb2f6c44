"""concepts on img2dataset shards (the miniature's img2dataset layout): shard for shard, incremental, by ranges and
merged, then align on the result."""
import argparse
import dataclasses
import io
import itertools
import json
import tarfile

import pytest
import torch
import webdataset as wds

from pipeline import paths
from pipeline.config import parse_params
from pipeline.datasets.caption_shards import caption_shard_paths, decode_caption_sample, read_manifest
from pipeline.datasets.img2dataset import expand_shards
from pipeline.datasets.miniature.img2dataset import write_img2dataset
from pipeline.errors import ConfigError, DataError
from pipeline.networks.encoder import Encoder
from pipeline.stages import concepts as stage
from pipeline.datasets import shards as shard_files
from pipeline.training.align import align_text, caption_loader
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.distributed import Processes

SHARDS = ["00000.tar", "00001.tar", "00002.tar", "00003.tar"]


@pytest.fixture
def web(tmp_path, monkeypatch, raw_params):
    """A workspace whose params read 4 img2dataset shards (6 images x 5 captions, 8 rows a shard) from
    data/img2dataset/ (data_root/img2dataset), which also holds img2dataset's sidecars."""
    monkeypatch.chdir(tmp_path)
    sources = write_img2dataset(tmp_path / "data" / "img2dataset", seed=0, images=6, rows_per_shard=8)
    (tmp_path / "data" / "img2dataset" / "00000.parquet").write_bytes(b"not read")
    raw_params["data_root"] = "data"
    raw_params["concepts"].update(source="img2dataset", shards="data/img2dataset", image_size=32)
    raw_params["prepare"]["workers"] = 1
    return tmp_path, sources, raw_params


def _run(raw_params, shards=None, task=None, merge=False) -> None:
    stage.run(argparse.Namespace(shards=shards, task=task, merge=merge), parse_params(raw_params))


def _members(path) -> list[str]:
    with tarfile.open(path) as tf:
        return tf.getnames()


def _snapshot() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.CONCEPTS.glob("*.tar")}


def test_each_input_shard_gives_its_concept_shard(web):
    root, sources, raw_params = web
    (root / "data" / "concepts").mkdir(parents=True)
    (root / "data" / "concepts" / "train-000000.tar").write_bytes(b"a COCO shard of an earlier run")
    _run(raw_params)
    manifest = read_manifest(paths.CONCEPTS)
    assert manifest["source"] == "img2dataset" and manifest["split"]["shards"] == SHARDS
    assert sorted(p.name for p in paths.CONCEPTS.iterdir()) == sorted(SHARDS + ["manifest.json", "records"])
    assert manifest["split"]["samples"] == 30 == json.loads(paths.CONCEPT_STATS.read_text())["captions"]
    shards = caption_shard_paths(paths.CONCEPTS)
    assert shards.web
    for source, output in zip(sources, shards.paths):
        inputs = list(wds.WebDataset(str(source), shardshuffle=False, empty_check=False))
        outputs = list(wds.WebDataset(output, shardshuffle=False, empty_check=False))
        assert [s["__key__"] + "_0" for s in inputs] == [s["__key__"] for s in outputs]
        assert [s["txt"] for s in inputs] == [s["txt"] for s in outputs]
        for raw, sample in zip(inputs, outputs):
            decoded = decode_caption_sample(sample)
            assert decoded.image.shape == (3, 32, 32)
            assert decoded.image_key == json.loads(raw["json"])["url"]  # COCO's 5 rows of an image share it
    assert sum(len(_members(p)) for p in shards.paths) == 30 * 6


def test_a_rerun_redoes_only_missing_or_changed_shards(web, capsys):
    root, sources, raw_params = web
    _run(raw_params)
    before = _snapshot()
    (paths.CONCEPTS / "00001.tar").unlink()
    other = write_img2dataset(root / "other", seed=1, images=6, rows_per_shard=8)
    sources[2].write_bytes(other[2].read_bytes())  # an input replaced by img2dataset
    capsys.readouterr()
    _run(raw_params)
    assert "2 of 4 shard(s) written" in capsys.readouterr().out
    after = _snapshot()
    assert after["00001.tar"] == before["00001.tar"] and after["00002.tar"] != before["00002.tar"]
    _run(raw_params)
    assert "0 of 4 shard(s) written" in capsys.readouterr().out
    raw_params["concepts"]["max_concepts"] = 4  # another spec: every shard is out of date
    _run(raw_params)
    assert "4 of 4 shard(s) written" in capsys.readouterr().out


def test_ranges_then_merge_equal_one_run(web):
    root, _, raw_params = web
    raw_params["prepare"]["workers"] = 2
    _run(raw_params)
    whole = _snapshot()
    for path in paths.CONCEPTS.rglob("*"):
        if path.is_file():
            path.unlink()
    raw_params["prepare"]["workers"] = 1
    _run(raw_params, shards="0:1")
    _run(raw_params, task="1/2")  # shards 2:4
    assert sorted(_snapshot()) == ["00000.tar", "00002.tar", "00003.tar"]
    assert not (paths.CONCEPTS / "manifest.json").exists()
    with pytest.raises(DataError, match="1 of 4 concept shards missing or out of date \\(first: 00001.tar\\)"):
        _run(raw_params, merge=True)
    _run(raw_params, task="0/2")
    _run(raw_params, merge=True)
    assert _snapshot() == whole  # 1 or 2 processes, one run or four: the same bytes
    assert read_manifest(paths.CONCEPTS)["split"]["shards"] == SHARDS


def test_bad_ranges_and_sources_say_what_was_expected(web):
    root, sources, raw_params = web
    with pytest.raises(DataError, match="--shards '3': expected START:END"):
        _run(raw_params, shards="3")
    with pytest.raises(DataError, match="selects none of the 4 input shards"):
        _run(raw_params, shards="4:9")
    with pytest.raises(DataError, match="--task '2/2': expected I/N with 0 <= I < N"):
        _run(raw_params, task="2/2")
    with pytest.raises(DataError, match=r"data/img2dataset/00004.tar: named by concepts.shards .* \(6 of 10 missing\)"):
        expand_shards("data/img2dataset/{00000..00009}.tar")
    with pytest.raises(DataError, match="empty: no .tar file in this folder"):
        (root / "empty").mkdir()
        expand_shards("empty")
    raw_params["concepts"]["shards"] = None
    with pytest.raises(ConfigError, match="concepts.shards must name the img2dataset shards"):
        parse_params(raw_params)
    raw_params["concepts"].update(source="coco_captions", shards="data/img2dataset")
    with pytest.raises(ConfigError, match="concepts.shards .* is read only with concepts.source: img2dataset"):
        parse_params(raw_params)


def test_a_sample_without_its_caption_is_named(web):
    _, sources, raw_params = web
    with tarfile.open(sources[1]) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers() if m.name != "000010003.txt"]
    with tarfile.open(sources[1], "w") as tf:
        for member, data in members:
            tf.addfile(member, io.BytesIO(data))
    with pytest.raises(DataError, match=r"data/img2dataset/00001.tar: sample '000010003' lacks \['txt'\]; expected img2dataset "
                                        r"samples with jpg, txt and json \(it has \['jpg', 'json'\]\)"):
        _run(raw_params)


def test_align_trains_on_one_resampled_shard_with_two_workers(web):
    """One concept shard, 2 loader workers: the stream resamples the shard (it cannot split it) and trains."""
    root, _, raw_params = web
    write_img2dataset(root / "one" / "img2dataset", seed=0, images=6, rows_per_shard=30)
    raw_params["data_root"] = "one"
    raw_params["concepts"]["shards"] = "one/img2dataset/00000.tar"
    _run(raw_params)
    params = parse_params(raw_params)
    shards = caption_shard_paths(paths.CONCEPTS)
    assert len(shards.paths) == 1 and shards.web
    variant = params.tower_variant("random")
    cfg = dataclasses.replace(params.align, batch_size=8, micro_batch_size=8, samples_per_epoch=16, epochs=1,
                              workers=2, feature_cache="none", log_every=1, shuffle_buffer=4, image_size=32)
    tower = Encoder(variant.timm_name, 32, variant.native_patch_size,
                    timm_kwargs=variant.timm_kwargs | {"img_size": 32}, normalization=cfg.normalization)
    torch.manual_seed(0)
    no_checkpoints = Checkpointer(root / "ckpt", {}, every=0, procs=Processes(), workers=cfg.workers)
    metrics = align_text(tower, cfg, params.text_tower, 0.05, shards, live_dir=None,
                         checkpointer=no_checkpoints).metrics
    assert metrics["optimizer_steps"] == 2 and torch.isfinite(torch.tensor(metrics["final_loss"]))
    assert metrics["mean_concepts_per_batch"] > 0


def test_generate_writes_the_img2dataset_layout_when_counts_name_it(tmp_path):
    """70 images x 5 captions = 350 rows: 6 shards of ROWS_PER_SHARD (64) rows, the last one partial, each with
    its stats file; the same rows as the direct writer's."""
    from pipeline.datasets.miniature import generate
    from pipeline.datasets.miniature.img2dataset import ROWS_PER_SHARD

    generate(tmp_path / "mini", seed=0, counts={"img2dataset": {"train": 70}})
    out = tmp_path / "mini" / "img2dataset"
    shards = sorted(out.glob("*.tar"))
    assert [p.name for p in shards] == [f"{i:05d}.tar" for i in range(6)]
    assert sorted(p.name for p in out.glob("*_stats.json")) == [f"{i:05d}_stats.json" for i in range(6)]
    rows = [len(_members(p)) // 3 for p in shards]
    assert rows == [ROWS_PER_SHARD] * 5 + [350 - 5 * ROWS_PER_SHARD]
    direct = write_img2dataset(tmp_path / "direct", seed=0, images=70, rows_per_shard=ROWS_PER_SHARD)
    assert [p.read_bytes() for p in direct] == [p.read_bytes() for p in shards]


def _edit_a_caption(path) -> None:
    """One byte of the first caption changed: same size, the tar still reads."""
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tf:
        member = next(m for m in tf if m.name.endswith(".txt"))
    data[member.offset_data] ^= 0x01
    path.write_bytes(bytes(data))


def test_align_checks_web_shards_by_size_at_start_and_by_sha256_as_it_reads(web, monkeypatch):
    """At LAION scale hashing every shard before training takes hours: align's start-up check is one stat per shard
    (a missing or truncated shard stops it there), and the stream hashes each shard as it reads it (an edited one
    stops training at that shard's end). Each error names the shard and what the manifest expected."""
    _, _, raw_params = web
    _run(raw_params)
    manifest = read_manifest(paths.CONCEPTS)
    assert manifest["bytes"] == {name: (paths.CONCEPTS / name).stat().st_size for name in SHARDS}
    with monkeypatch.context() as m:
        m.setattr(shard_files, "file_sha256", lambda path: pytest.fail(f"hashed {path} before training"))
        shards = caption_shard_paths(paths.CONCEPTS)
    assert shards.digests.sha256 == {str(paths.CONCEPTS / n): manifest["sha256"][n] for n in SHARDS}
    cfg = dataclasses.replace(parse_params(raw_params).align, micro_batch_size=4, workers=0, shuffle_buffer=2,
                              image_size=32)
    assert len(list(itertools.islice(caption_loader(shards, cfg, False, torch.device("cpu")), 20))) == 20
    edited = paths.CONCEPTS / SHARDS[2]
    _edit_a_caption(edited)
    shards = caption_shard_paths(paths.CONCEPTS)  # the size is unchanged: it passes the start-up check
    manifest_path = paths.CONCEPTS / "manifest.json"
    with pytest.raises(DataError, match=rf"^{edited}: sha256 differs from the one {manifest_path} "
                                        rf"recorded \(truncated or modified since concepts wrote it: expected "
                                        rf"{manifest['sha256'][SHARDS[2]]}, found [0-9a-f]{{64}} when read to its end"):
        list(itertools.islice(caption_loader(shards, cfg, False, torch.device("cpu")), 20))
    edited.write_bytes(edited.read_bytes()[:-1024])
    with pytest.raises(DataError, match=rf"^{edited}: {manifest['bytes'][SHARDS[2]] - 1024} bytes, where "
                                        rf"{paths.CONCEPTS / 'manifest.json'} recorded {manifest['bytes'][SHARDS[2]]} "
                                        r"\(truncated or modified since concepts wrote it\); re-run: "
                                        r"dvc repro -f -s concepts$"):
        caption_shard_paths(paths.CONCEPTS)
    edited.unlink()
    with pytest.raises(DataError, match=rf"^{edited}: listed in .*manifest.json but missing"):
        caption_shard_paths(paths.CONCEPTS)
