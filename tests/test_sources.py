import re
from urllib.parse import urlparse

import pytest

from pipeline.datasets.sources import SOURCES, RemoteFile, Source, get_source
from pipeline.errors import DataError

HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64}
EXPECTED = {"ade20k", "pascal_voc", "pascal_context", "cityscapes", "gta5", "coco_stuff",
            "coco_object", "coco_captions", "imagenet"}


def _all_files():
    return [(s, f) for s in SOURCES.values() for f in s.files]


def test_registry_has_exactly_the_expected_downloads():
    assert set(SOURCES) == EXPECTED
    for key, source in SOURCES.items():
        assert isinstance(source, Source) and source.name == key
        assert source.files and all(isinstance(f, RemoteFile) for f in source.files)
        assert source.homepage.startswith(("http://", "https://"))
        assert source.licence and "\n" not in source.licence
        assert source.disk


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_file_names_are_unique_within_a_source(name):
    names = [f.name for f in SOURCES[name].files]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if SOURCES[n].manual is None))
def test_downloadable_files_have_http_urls_ending_in_their_name(name):
    for f in SOURCES[name].files:
        assert f.url is not None, f.name
        parsed = urlparse(f.url)
        assert parsed.scheme in ("http", "https") and parsed.netloc, f.url
        assert parsed.path.rsplit("/", 1)[-1] == f.name, f.url


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if SOURCES[n].manual is not None))
def test_manual_sources_have_no_urls_and_explain_every_file(name):
    source = SOURCES[name]
    assert all(f.url is None for f in source.files)
    for f in source.files:
        assert f.name in source.manual
    assert source.homepage in source.manual or "login" in source.manual
    assert re.search(r"https?://\S+", source.manual)


def test_cityscapes_is_manual_with_both_archives():
    source = get_source("cityscapes")
    assert source.manual is not None
    assert {f.name for f in source.files} == {"leftImg8bit_trainvaltest.zip",
                                                "gtFine_trainvaltest.zip"}
    assert "https://www.cityscapes-dataset.com/login/" in source.manual
    assert "packageID=3" in source.manual and "packageID=1" in source.manual


def test_checksums_parse_as_algorithm_and_hex_of_the_right_length():
    for source, f in _all_files():
        if f.checksum is None:
            continue
        algo, sep, digest = f.checksum.partition(":")
        assert sep and algo in HEX_LENGTH, (source.name, f.checksum)
        assert re.fullmatch(r"[0-9a-f]+", digest), (source.name, f.checksum)
        assert len(digest) == HEX_LENGTH[algo], (source.name, f.checksum)


def test_sizes_are_positive_ints_where_given():
    for _, f in _all_files():
        assert f.size is None or (isinstance(f.size, int) and f.size > 0)


def test_a_file_name_means_the_same_file_everywhere():
    seen: dict[str, RemoteFile] = {}
    for _, f in _all_files():
        assert seen.setdefault(f.name, f) == f, f.name


def test_shared_files_are_identical_across_entries():
    def by_name(source, name):
        return next(f for f in get_source(source).files if f.name == name)

    assert by_name("coco_stuff", "val2017.zip") is by_name("coco_object", "val2017.zip")
    ann = "annotations_trainval2017.zip"
    assert by_name("coco_object", ann) is by_name("coco_captions", ann)


def test_gta5_has_the_twenty_parts():
    files = get_source("gta5").files
    expected = {f"{i:02d}_{kind}.zip" for i in range(1, 11) for kind in ("images", "labels")}
    assert len(files) == 20 and {f.name for f in files} == expected
    for f in files:
        assert f.url == f"https://download.visinf.tu-darmstadt.de/data/from_games/data/{f.name}"


def test_records_are_frozen():
    with pytest.raises(AttributeError):
        get_source("ade20k").files[0].size = 1  # type: ignore[misc]


def test_unknown_source_lists_known_names():
    with pytest.raises(DataError) as exc:
        get_source("places365")
    msg = str(exc.value)
    assert "'places365'" in msg
    for name in EXPECTED:
        assert name in msg
