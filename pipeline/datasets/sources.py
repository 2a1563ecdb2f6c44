"""Where every dataset's raw files come from: official URLs, sizes, checksums, licences.

Each `Source` lists the archives the `download@<dataset>` stage puts in `data/raw/<dataset>/`.
A size or checksum is recorded only where a credible public source states it (the comment next
to each value names the repository and file); nothing here was guessed. A file without a
published checksum is still verified for size where the size is known, and in every case DVC
records the md5 of what was actually downloaded in `dvc.lock`, so a later change upstream is
detected on the next `dvc repro` / `dvc status`.

Files behind a login (Cityscapes, ImageNet) have `url=None`; their `Source.manual` says where to register,
which files to fetch by hand and from which page.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    name: str                    # file name in the raw folder, e.g. "ADEChallengeData2016.zip"
    url: str | None              # official URL; None for files behind a login
    size: int | None = None      # bytes, only where a trustworthy source states it
    checksum: str | None = None  # "md5:<hex>" | "sha1:<hex>" | "sha256:<hex>", only where published


@dataclass(frozen=True)
class Source:
    name: str                       # dataset id
    files: tuple[RemoteFile, ...]
    homepage: str
    licence: str                    # one line: licence / terms of use
    disk: str                       # human size on disk of the files
    manual: str | None = None       # None = downloadable; else how to get the files by hand


# --- files (each defined once; shared files are the same object in every Source) -------------

ADE_CHALLENGE_2016 = RemoteFile(
    "ADEChallengeData2016.zip",
    "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
    # size and sha256: tensorflow/datasets tensorflow_datasets/url_checksums/ade20k.txt, and the
    # same two values in huggingface/datasets datasets/scene_parse_150/dataset_infos.json.
    size=967382037,
    checksum="sha256:7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29",
)

VOC2012_TRAINVAL = RemoteFile(
    "VOCtrainval_11-May-2012.tar",
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    # size: tensorflow/datasets tensorflow_datasets/url_checksums/voc.txt (pjreddie mirror of the
    # same tar); public wget/keras logs of the official URL show the same Content-Length.
    size=1999639040,
    # md5: pytorch/vision torchvision/datasets/voc.py (DATASET_YEAR_DICT['2012']).
    checksum="md5:6cd6e144f989b92b3379bac3b3de84fd",
)

VOC2010_TRAINVAL = RemoteFile(
    "VOCtrainval_03-May-2010.tar",
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    # size: no byte count found in a credible source (the VOC2010 page says "1.3GB").
    # md5: pytorch/vision torchvision/datasets/voc.py (DATASET_YEAR_DICT['2010']).
    checksum="md5:da459979d0c395079b5c75ee67908abb",
)

PASCAL_CONTEXT_TRAINVAL = RemoteFile(
    "trainval.tar.gz",
    "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
    # No published size in bytes or checksum found (the project page says "30.7 MB").
)

CITYSCAPES_LEFTIMG8BIT = RemoteFile(
    "leftImg8bit_trainvaltest.zip",
    None,  # behind a login: https://www.cityscapes-dataset.com/file-handling/?packageID=3
    # md5: saifullah3396/datadings datadings/sets/Cityscapes_write.py (FILES['left']); the same
    # value is listed in several public download scripts. The official md5 is served, after
    # login, at https://www.cityscapes-dataset.com/md5-sum/?packageID=3 (the URL
    # mcordts/cityscapesScripts cityscapesscripts/download/downloader.py checks against).
    checksum="md5:0a6e97e94b616a514066c9e2adb0c97f",
)

CITYSCAPES_GTFINE = RemoteFile(
    "gtFine_trainvaltest.zip",
    None,  # behind a login: https://www.cityscapes-dataset.com/file-handling/?packageID=1
    # md5: saifullah3396/datadings datadings/sets/Cityscapes_write.py (FILES['gt']); official
    # value at https://www.cityscapes-dataset.com/md5-sum/?packageID=1 (login required).
    checksum="md5:4237c19de34c8a376e9ba46b495d6f66",
)

GTA5_BASE_URL = "https://download.visinf.tu-darmstadt.de/data/from_games/data/"
# No sizes or checksums are published for the GTA5 parts; only the URL pattern is verified
# (e.g. sarrrrry/PyTorchDL_GTA5 README.md lists all 20 URLs).
GTA5_FILES = tuple(
    RemoteFile(f"{i:02d}_{kind}.zip", f"{GTA5_BASE_URL}{i:02d}_{kind}.zip")
    for kind in ("images", "labels")
    for i in range(1, 11)
)

COCO_VAL2017 = RemoteFile(
    "val2017.zip",
    "http://images.cocodataset.org/zips/val2017.zip",
    # size and sha256: tensorflow/datasets tensorflow_datasets/url_checksums/coco.txt
    # (same values in url_checksums/coco2017.txt and coco_captions.txt).
    size=815585330,
    checksum="sha256:4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
)

COCO_TRAIN2017 = RemoteFile(
    "train2017.zip",
    "http://images.cocodataset.org/zips/train2017.zip",
    # size and sha256: tensorflow/datasets tensorflow_datasets/url_checksums/coco.txt
    size=19336861798,
    checksum="sha256:69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
)

COCO_ANNOTATIONS_TRAINVAL2017 = RemoteFile(
    "annotations_trainval2017.zip",
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
    # size and sha256: tensorflow/datasets tensorflow_datasets/url_checksums/coco.txt
    size=252907541,
    checksum="sha256:113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
)

COCO_STUFFTHINGMAPS_TRAINVAL2017 = RemoteFile(
    "stuffthingmaps_trainval2017.zip",
    "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/"
    "stuffthingmaps_trainval2017.zip",
    # No published size in bytes or checksum found (nightrome/cocostuff README.md says "659 MB").
)


IMAGENET_VAL = RemoteFile(
    "ILSVRC2012_img_val.tar",
    None,  # behind a login: https://image-net.org/challenges/LSVRC/2012/2012-downloads.php
    # size: CompVis/taming-transformers taming/data/imagenet.py (ImageNetValidation.SIZES), and the
    # Content-Length of image-net.org in public wget logs.
    size=6744924160,
    # md5: pytorch/vision torchvision/datasets/imagenet.py (ARCHIVE_META['val']).
    checksum="md5:29b22e2961454d5413ddabcf34fc5622",
)

IMAGENET_DEVKIT = RemoteFile(
    "ILSVRC2012_devkit_t12.tar.gz",
    None,  # behind a login, on the same page
    # size: public sources disagree (2568145, 2568634 bytes), so none is recorded.
    # md5: pytorch/vision torchvision/datasets/imagenet.py (ARCHIVE_META['devkit']).
    checksum="md5:fa75699e90414af021442c21a62c3abf",
)


# --- sources ----------------------------------------------------------------------------------

_COCO_LICENCE = ("COCO annotations CC BY 4.0; images under the Flickr terms of use "
                 "(https://cocodataset.org/#termsofuse)")

_CITYSCAPES_LOGIN = "https://www.cityscapes-dataset.com/login/"
_CITYSCAPES_DOWNLOADS = "https://www.cityscapes-dataset.com/downloads/"

SOURCES: dict[str, Source] = {source.name: source for source in (
    Source(
        name="ade20k",
        files=(ADE_CHALLENGE_2016,),
        homepage="http://sceneparsing.csail.mit.edu/",
        licence=("MIT Scene Parsing Benchmark (ADE20K) release, BSD-3-Clause; images keep their "
                 "original copyrights (research use)"),
        disk="923 MB",
    ),
    Source(
        name="pascal_voc",
        files=(VOC2012_TRAINVAL,),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        licence=("PASCAL VOC: images from Flickr, use must respect the Flickr terms of use; "
                 "annotations for research use"),
        disk="1.9 GB",
    ),
    Source(
        name="pascal_context",
        files=(VOC2010_TRAINVAL, PASCAL_CONTEXT_TRAINVAL),
        homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
        licence=("VOC2010 images under the Flickr terms of use; PASCAL-Context annotations for "
                 "research use (see the project page)"),
        disk="1.3 GB",
    ),
    Source(
        name="cityscapes",
        files=(CITYSCAPES_LEFTIMG8BIT, CITYSCAPES_GTFINE),
        homepage="https://www.cityscapes-dataset.com/",
        licence=("Cityscapes licence: free for non-commercial research and teaching only, "
                 "registration required, no redistribution"),
        disk="11.2 GB",
        manual=(
            "Cityscapes requires an account (register at "
            f"https://www.cityscapes-dataset.com/register/, then log in at {_CITYSCAPES_LOGIN}). "
            f"On the downloads page {_CITYSCAPES_DOWNLOADS} download leftImg8bit_trainvaltest.zip (11GB, packageID=3) and "
            "gtFine_trainvaltest.zip (241MB, packageID=1), or use `csDownload` from "
            "cityscapesScripts with your credentials."
        ),
    ),
    Source(
        name="imagenet",
        files=(IMAGENET_VAL, IMAGENET_DEVKIT),
        homepage="https://image-net.org/",
        licence=("ImageNet terms of access: non-commercial research and educational use only, "
                 "registration required, no redistribution"),
        disk="6.3 GB",
        manual=(
            "ImageNet requires an account (sign up at https://image-net.org/signup.php and accept the terms "
            "of access). On https://image-net.org/challenges/LSVRC/2012/2012-downloads.php download "
            "ILSVRC2012_img_val.tar (validation images, 6.3GB) and ILSVRC2012_devkit_t12.tar.gz "
            "(development kit, Task 1 & 2, 2.5MB)."
        ),
    ),
    Source(
        name="gta5",
        files=GTA5_FILES,
        homepage="https://download.visinf.tu-darmstadt.de/data/from_games/",
        licence=("Playing for Data (GTA V): research and educational use only; images derived "
                 "from Grand Theft Auto V (see the project page)"),
        disk="~60 GB (estimate: no official sizes published)",
    ),
    Source(
        name="coco_stuff",
        files=(COCO_VAL2017, COCO_STUFFTHINGMAPS_TRAINVAL2017),
        homepage="https://github.com/nightrome/cocostuff",
        licence=("COCO-Stuff annotations CC BY 4.0; COCO images under the Flickr terms of use "
                 "(https://cocodataset.org/#termsofuse)"),
        disk="1.4 GB",
    ),
    Source(
        name="coco_object",
        files=(COCO_VAL2017, COCO_ANNOTATIONS_TRAINVAL2017),
        homepage="https://cocodataset.org/",
        licence=_COCO_LICENCE,
        disk="1.0 GB",
    ),
    Source(
        name="coco_captions",
        files=(COCO_TRAIN2017, COCO_VAL2017, COCO_ANNOTATIONS_TRAINVAL2017),
        homepage="https://cocodataset.org/",
        licence=_COCO_LICENCE,
        disk="19.0 GB",
    ),
)}


def get_source(name: str) -> Source:
    """The `Source` of download `name`; DataError listing the known names otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown download {name!r}; expected one of {sorted(SOURCES)}") from None
