"""Frozen-tower features cached per image, so repeated visits skip the vision forward (SimZSS notes §7).

Keys are image keys (one image has ~5 captions, so it is visited many times per run).
Only a deterministic view of each image can be cached: with a cache, training sees one
full view per image instead of a fresh random crop per visit.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch

from pipeline.datasets.shards import file_sha256

Features = tuple[torch.Tensor, torch.Tensor]  # (global B x D, patches B x N x D)


class FeatureCache:
    """In-memory store of fp16 features on the training device."""

    def __init__(self):
        self.store: dict[str, Features] = {}
        self.hits = self.misses = 0

    def lookup(self, key: str) -> Features | None:
        return self.store.get(key)

    def save(self, key: str, features: Features) -> None:
        self.store[key] = features

    def features(self, keys: list[str], images: torch.Tensor, compute: Callable[[torch.Tensor], Features],
                 real: list[bool] | None = None) -> Features:
        """Features of a batch: cached rows looked up, the others computed from `images` in one forward and stored.

        `real` tells which rows hold the image (the loader leaves out images it knows are cached); a missing row
        without one stops the run rather than caching the features of a blank image.
        """
        found = [self.lookup(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if real is not None and not all(real[i] for i in missing):
            raise RuntimeError(f"feature cache: no features for {[keys[i] for i in missing if not real[i]]}, "
                               "whose images the loader left out as cached")
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            glob, patches = compute(images[missing])
            for row, i in enumerate(missing):
                found[i] = (glob[row].half(), patches[row].half())
                self.save(keys[i], found[i])
        return (torch.stack([f[0] for f in found]).float(), torch.stack([f[1] for f in found]).float())


class DiskFeatureCache(FeatureCache):
    """Features as one file per image under `folder`, kept across runs; nothing is held in memory."""

    def __init__(self, folder: str | Path, device: torch.device):
        super().__init__()
        self.folder, self.device = Path(folder), device
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def lookup(self, key: str) -> Features | None:
        path = self._path(key)
        if not path.exists():
            return None
        glob, patches = torch.load(path, map_location=self.device, weights_only=True)
        return glob, patches

    def save(self, key: str, features: Features) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(tuple(t.cpu() for t in features), tmp)
        os.replace(tmp, path)


def cache_fingerprint(weights: Path, *parts: object) -> str:
    """Folder name for a disk cache: the tower's weights file and everything else that changes the features."""
    return hashlib.sha256((file_sha256(weights) + repr(parts)).encode()).hexdigest()[:16]
