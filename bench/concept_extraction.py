"""concepts on img2dataset shards: captions/s per process, scaling with processes, and hours for LAION-400M.

Measures, on the miniature's img2dataset layout (`pipeline.datasets.miniature.img2dataset`, 5 captions per image,
the authors' 573-concept bank):
- text only: clean + CLIP-tokenize + extract + token spans, one process, with the bank_match backend (and
  noun_chunks with en_core_web_sm when it is installed);
- the whole shard path (`update_web_shards`: read, square-crop and re-encode the JPEG, text, write the shard) with
  1, 2, ... processes over the shards.
Then hours for LAION-400M (400M captions) on N cores from those rates; spaCy's parsers, which need trained
pipelines not installed here, at an ASSUMED rate (printed as such).

    python bench/concept_extraction.py --images 400 --processes 1 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.datasets.bpe_spans import tokenize_caption
from pipeline.datasets.caption_shards import encode_caption
from pipeline.datasets.concept_bank import load_bank
from pipeline.datasets.concepts import concept_extractor
from pipeline.datasets.img2dataset import read_shard
from pipeline.datasets.miniature.img2dataset import write_img2dataset
from pipeline.datasets.web_caption_shards import ConceptSpec, update_web_shards
from pipeline.errors import SpacyModelError

LAION = 400e6
CORES = (1, 32, 256)
WORDS_PER_CAPTION = 10.5  # COCO's mean; LAION's alt-texts are of the same order
# spaCy's published CPU speeds (spacy.io "Facts & Figures", words/s per core, full pipeline): an assumption here.
ASSUMED_WPS = {"noun_chunks, en_core_web_sm (assumed)": 10_000, "noun_chunks, en_core_web_trf (assumed)": 684}


def text_rate(captions: list[str], bank: tuple[str, ...], backend: str, model: str) -> float:
    """Captions/s of the text path in this process (the first call, which builds caches, is not timed)."""
    extract = concept_extractor(backend, bank, model)
    bank_ids = {name: i for i, name in enumerate(bank)}

    def encode(texts):
        tokenized = [tokenize_caption(text) for text in texts]
        for caption, found in zip(tokenized, extract([c.text for c in tokenized])):
            encode_caption(caption, found, bank_ids, 32, 16)

    encode(captions[:50])
    start = time.perf_counter()
    encode(captions)
    return len(captions) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="miniature images (5 captions each)")
    p.add_argument("--rows-per-shard", type=int, default=250)
    p.add_argument("--image-size", type=int, default=224, help="concepts.image_size (the stored square crop)")
    p.add_argument("--processes", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = p.parse_args()
    bank = load_bank("authors", ())
    with tempfile.TemporaryDirectory() as tmp:
        sources = write_img2dataset(Path(tmp) / "web", 0, args.images, args.rows_per_shard)
        captions = [web.caption for source in sources for web in read_shard(source)]
        print(f"{len(captions)} captions in {len(sources)} shards, bank of {len(bank)}, {os.cpu_count()} cores")
        rates = {"bank_match, text only": text_rate(captions, bank, "bank_match", "")}
        try:
            rates["noun_chunks, en_core_web_sm, text only"] = text_rate(captions, bank, "noun_chunks",
                                                                        "en_core_web_sm")
        except SpacyModelError:
            print("noun_chunks: en_core_web_sm is not installed here (no trained spaCy pipeline): not measured")
        spec = ConceptSpec(bank, "bank_match", "", args.image_size, 32, 16)
        for processes in args.processes:
            start = time.perf_counter()
            update_web_shards(sources, Path(tmp) / f"out{processes}", spec, processes)
            rate = len(captions) / (time.perf_counter() - start)
            print(f"bank_match, whole shard path, {processes} process(es): {rate:.0f} captions/s "
                  f"({rate / processes:.0f} per process)")
            rates.setdefault("bank_match, whole shard path (per process)", rate / processes)
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} captions/s per process")
    rates |= {name: wps / WORDS_PER_CAPTION for name, wps in ASSUMED_WPS.items()}
    print(f"\nLAION-400M ({LAION:.0e} captions), hours on N cores (linear scaling assumed; "
          f"assumed spaCy rates: words/s per core / {WORDS_PER_CAPTION} words per caption):")
    print(f"{'extraction':<46}{'captions/s/core':>16}" + "".join(f"{f'N={n}':>10}" for n in CORES))
    for name, rate in rates.items():
        print(f"{name:<46}{rate:>16.0f}" + "".join(f"{LAION / (rate * n) / 3600:>10.1f}" for n in CORES))


if __name__ == "__main__":
    main()
