"""ImageNet-1k zero-shot classification: the validation readers' labels, the miniature, top-1/top-5, params."""
import copy
import functools
import io
import tarfile

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from timm.data import ImageNetInfo

from pipeline.config import parse_params
from pipeline.datasets.miniature import generate
from pipeline.datasets.miniature.formats import encode_jpeg
from pipeline.datasets.readers import imagenet_wnids, list_class_samples, read_bytes
from pipeline.datasets.shards import prepare_dataset
from pipeline.datasets.sources import get_source
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation import zeroshot_suite
from pipeline.evaluation.zeroshot import classification_crop, evaluate_classification
from pipeline.evaluation.zeroshot_suite import evaluate_imagenet, tower_functions
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import TextTower, tokenize
from pipeline.networks.text_tower_cfg import TextTowerCfg

FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
          "num_train_images")
# ILSVRC2012_ID -> WNID, deliberately not in sorted-wnid order (the real devkit's id 1 is n02119789, kit fox).
DEVKIT = {1: "n15075141", 2: "n02119789", 3: "n01440764", 4: "n02123045"}
TRUTH = [3, 1, 4, 2, 3]  # the ILSVRC2012_ID of validation images 1..5


def sorted_wnid_label(wnid: str) -> int:
    """The standard label, computed here: the wnid's position among the 1000 wnids sorted."""
    return sorted(ImageNetInfo().label_names()).index(wnid)


def meta_mat(classes: dict[int, str], internal: bool = True) -> bytes:
    """A devkit meta.mat: `synsets`, an N x 1 struct array with the official fields; one internal synset."""
    rows = [(i, wnid, wnid, "", 0, np.zeros((1, 0)), 0, 1300) for i, wnid in classes.items()]
    if internal:
        rows.append((len(classes) + 1, "n00001740", "entity", "", len(classes), np.array(list(classes)), 18, 0))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in FIELDS])
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def write_tar(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def jpeg(seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (20 + seed, 30, 3), dtype=np.uint8))


def official(root, truth=TRUTH, meta: bytes | None = None, images: int | None = None):
    root.mkdir(exist_ok=True)
    write_tar(root / "ILSVRC2012_img_val.tar",
              {f"ILSVRC2012_val_{n:08d}.JPEG": jpeg(n) for n in range(1, (images or len(truth)) + 1)})
    data = "ILSVRC2012_devkit_t12/data/"
    write_tar(root / "ILSVRC2012_devkit_t12.tar.gz", {
        f"{data}meta.mat": meta_mat(DEVKIT) if meta is None else meta,
        f"{data}ILSVRC2012_validation_ground_truth.txt": "".join(f"{i}\n" for i in truth).encode()})
    return root


def test_devkit_ids_map_to_the_sorted_wnid_labels(tmp_path):
    refs = list_class_samples("imagenet", official(tmp_path / "in"), "val")
    assert [r.key for r in refs] == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 6)]
    assert [r.label for r in refs] == [sorted_wnid_label(DEVKIT[i]) for i in TRUTH]
    assert [r.label for r in refs] == [0, 999, 281, 278, 0]
    assert [IMAGENET_CLASSNAMES[r.label] for r in refs[:4]] == ["tench", "toilet paper", "tabby cat", "kit fox"]
    assert read_bytes(refs[1].image_path) == jpeg(2)


def test_the_label_order_is_sorted_and_open_clips():
    assert list(imagenet_wnids()) == sorted(imagenet_wnids()) and len(set(imagenet_wnids())) == 1000
    assert len(IMAGENET_CLASSNAMES) == 1000
    assert (IMAGENET_CLASSNAMES[0], IMAGENET_CLASSNAMES[281], IMAGENET_CLASSNAMES[999]) == \
        ("tench", "tabby cat", "toilet paper")


def test_extracted_class_folders(tmp_path):
    for n, wnid in enumerate(["n02123045", "n01440764", "n02123045"], 1):
        (tmp_path / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (tmp_path / "val" / wnid / f"ILSVRC2012_val_{n:08d}.JPEG").write_bytes(jpeg(n))
    refs = list_class_samples("imagenet", tmp_path, "val")
    assert [(r.key, r.label) for r in refs] == [("ILSVRC2012_val_00000001", 281), ("ILSVRC2012_val_00000002", 0),
                                                ("ILSVRC2012_val_00000003", 281)]


@pytest.mark.parametrize("make, match", [
    (lambda root: official(root, truth=TRUTH[:4], images=5), r"val_00000005.JPEG: image 5, but .* lists 4 labels"),
    (lambda root: official(root, images=4), r"ILSVRC2012_img_val.tar: 4 ILSVRC2012_val_\*.JPEG images, but .* 5"),
    (lambda root: official(root, truth=[3, 1, 9]), r"ground_truth.txt: line 3 .* is 9, not the ILSVRC2012_ID"),
    (lambda root: official(root, truth=[3, 5]), r"line 2 .* is 5"),  # 5: the internal synset, not a class
    (lambda root: official(root, meta=b"not a mat file"), r"meta.mat: expected the devkit's meta.mat"),
    (lambda root: official(root, meta=meta_mat({1: "n99999999"}, internal=False), truth=[1]),
     r"meta.mat: 'n99999999' is not one of the 1000 ImageNet-1k wnids"),
    (lambda root: (root / "val" / "n01440764x").mkdir(parents=True), r"n01440764x'? is not one of the 1000"),
    (lambda root: root.mkdir(), r"found neither ILSVRC2012_img_val.tar .* nor an extracted val/<wnid>"),
])
def test_bad_layouts_name_the_file_and_what_was_expected(tmp_path, make, match):
    make(tmp_path / "in")
    with pytest.raises(DataError, match=match):
        list_class_samples("imagenet", tmp_path / "in", "val")


def test_a_missing_devkit_is_named(tmp_path):
    official(tmp_path / "in")
    (tmp_path / "in" / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(DataError, match="ILSVRC2012_devkit_t12.tar.gz"):
        list_class_samples("imagenet", tmp_path / "in", "val")


def test_imagenet_downloads_by_hand_against_torchvisions_md5s():
    source = get_source("imagenet")
    assert source.manual and "image-net.org" in source.manual
    files = {f.name: f for f in source.files}
    assert files["ILSVRC2012_img_val.tar"].checksum == "md5:29b22e2961454d5413ddabcf34fc5622"
    assert files["ILSVRC2012_devkit_t12.tar.gz"].checksum == "md5:fa75699e90414af021442c21a62c3abf"
    assert all(name in source.manual and f.url is None for name, f in files.items())


def test_the_miniature_is_in_the_official_layout_with_devkit_ids_out_of_label_order(tmp_path):
    generate(tmp_path, 0, {"imagenet": {"val": 12}})
    root = tmp_path / "imagenet"
    refs = list_class_samples("imagenet", root, "val")
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz") as tar:
        data = "ILSVRC2012_devkit_t12/data/"
        synsets = scipy.io.loadmat(tar.extractfile(f"{data}meta.mat"), squeeze_me=True)["synsets"]
        truth = tar.extractfile(f"{data}ILSVRC2012_validation_ground_truth.txt").read().split()
    leaves = {int(i): str(w) for i, w, n in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"])
              if n == 0}
    assert sorted(leaves, key=leaves.get) != sorted(leaves)  # ids are not in wnid order
    assert [r.label for r in refs] == [sorted_wnid_label(leaves[int(i)]) for i in truth]
    assert len(set(r.label for r in refs)) > 2


def random_tower(size: int) -> Encoder:
    torch.manual_seed(0)
    return Encoder("vit_small_patch16_224", size, 16, timm_kwargs={"embed_dim": 48, "depth": 1, "num_heads": 2}
                   ).eval().requires_grad_(False)


def ranks(features: torch.Tensor, classes: torch.Tensor, labels: list[int]) -> np.ndarray:
    """0-based rank of each image's class among the cosine scores, by numpy's argsort."""
    scores = (F.normalize(features, dim=-1) @ F.normalize(classes, dim=-1).T).numpy()
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(row == label)[0]) for row, label in zip(order, labels)])


def test_top_k_matches_an_independent_ranking():
    tower = random_tower(32)
    _, global_fn = tower_functions(tower, "fp32", "cls")
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, 40 + 3 * i, 50), dtype=np.uint8)) for i in range(7)]
    features = torch.cat([global_fn(classification_crop(im, 32)[None].float() / 255) for im in images])
    classes = torch.randn(20, features.shape[1])
    labels = [0, 1, 2, 3, 4, 5, 6]
    classes[[0, 1, 2]] = features[[0, 1, 2]]          # their own embedding: certainly top-1
    classes[3] = features[3] + 0.5 * torch.randn(features.shape[1])
    samples = [(str(i), im, torch.tensor(label)) for i, (im, label) in enumerate(zip(images, labels))]
    result = evaluate_classification(samples, global_fn, classes, image_size=32, batch_size=3, ks=(1, 5, 10))
    expected = ranks(features, classes, labels)
    assert result == {"images": 7, "top1": np.mean(expected < 1), "top5": np.mean(expected < 5),
                      "top10": np.mean(expected < 10)}
    assert result["top1"] >= 3 / 7


def test_the_crop_is_open_clips_resize_and_centre_crop():
    image = torch.arange(3 * 40 * 80, dtype=torch.float32).reshape(3, 40, 80).remainder(251).to(torch.uint8)
    crop = classification_crop(image, 20)
    assert crop.shape == (3, 20, 20) and crop.dtype == torch.uint8
    resized = np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((40, 20), Image.BICUBIC))
    reference = torch.from_numpy(resized[:, 10:30].copy()).permute(2, 0, 1).int()
    assert (crop.int() - reference).abs().max() <= 2  # PIL's and torchvision's bicubic differ by rounding


def test_imagenet_top_k_end_to_end_from_the_official_archives(tmp_path, monkeypatch):
    """Miniature archives -> prepare@imagenet's shards -> evaluate_imagenet, against top-k computed here from the
    reader's images and the text tower's prompt embeddings (one template, for speed)."""
    generate(tmp_path / "raw", 0, {"imagenet": {"val": 10}})
    prepare_dataset("imagenet", tmp_path / "raw" / "imagenet", tmp_path / "shards", shard_size=4, workers=0)
    template = OPENAI_IMAGENET_TEMPLATES[:1]
    monkeypatch.setattr(zeroshot_suite, "class_embeddings",
                        functools.partial(zeroshot_suite.class_embeddings, templates=template))
    refs = list_class_samples("imagenet", tmp_path / "raw" / "imagenet", "val")
    labels = [r.label for r in refs]
    images = [torch.from_numpy(np.asarray(Image.open(io.BytesIO(read_bytes(r.image_path))).convert("RGB")).copy())
              .permute(2, 0, 1) for r in refs]
    tower, text = random_tower(32), TextTower(TextTowerCfg(width=32, layers=1, heads=2), 48).eval()
    _, global_fn = tower_functions(tower, "fp32", "cls")
    features = torch.cat([global_fn(classification_crop(im, 32)[None].float() / 255) for im in images])
    tokens = tokenize([template[0](name) for name in IMAGENET_CLASSNAMES])
    align_text_to_images(text, tokens, features, labels)
    metrics = evaluate_imagenet(tower, text, tmp_path / "shards", 32, batch_size=4, workers=0, precision="fp32")

    with torch.no_grad():
        expected = ranks(features, text.encode(tokens), labels)
    assert metrics == pytest.approx({"images_imagenet": 10, "top1_imagenet": np.mean(expected < 1),
                                     "top5_imagenet": np.mean(expected < 5)})
    assert metrics["top1_imagenet"] > 0.1  # chance: 0.001


def align_text_to_images(text: TextTower, tokens: torch.Tensor, features: torch.Tensor, labels: list[int]) -> None:
    """Set the text projection so that each present class's prompt embeds at its images' mean feature (a least-squares
    fit of the prompts' EOT states), so that the classifier scores well above chance."""
    present = sorted(set(labels))
    with torch.no_grad():
        _, hidden = text.transformer(tokens[present])
        eot = hidden[torch.arange(len(present)), tokens[present].argmax(-1)]
        targets = torch.stack([features[[i for i, label in enumerate(labels) if label == c]].mean(0) for c in present])
        text.transformer.text_projection.copy_(torch.linalg.pinv(eot) @ targets)


def test_imagenet_needs_its_prepared_dataset(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["zeroshot"]["imagenet"] = True
    with pytest.raises(ConfigError, match=r"zeroshot.imagenet: .*'imagenet' is not in datasets"):
        parse_params(copy.deepcopy(raw))
    raw["datasets"] = [*raw["datasets"], "imagenet"]
    assert parse_params(copy.deepcopy(raw)).zeroshot.imagenet
    raw["setting_cfg"]["default"] = {"dataset": "imagenet"}
    with pytest.raises(ConfigError, match=r"dataset in setting 'default'.*unknown value 'imagenet'"):
        parse_params(raw)
