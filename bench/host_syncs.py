"""Host synchronisations per micro-batch of a fine-tuning step (linear; Mask2Former) and per evaluation image.

Each one makes the host wait until the device has run everything queued before it, so the device idles while the
host catches up: on a GPU a handful per step is free, hundreds are not. The step is the real
pipeline.training.finetune.train loop (a few optimizer steps; a forward pre-hook tells the micro-batches apart, so
a micro-batch's count runs from its forward to the next one's and the last one of a step holds the optimizer step),
the image is finetune.evaluate on one validation image, then the mIoU of its confusion matrix. Inputs: the miniature ADE20K (a few images generated and
prepared into shards in a temporary folder) and the --params model (default: the miniature's toy ViT), randomly
initialised. What is counted, by a TorchDispatchMode that sees every ATen op (backward included):

- reads of a device scalar, `aten::_local_scalar_dense` (`.item()`, `float()`, `bool()`, `if t:`), and `equal`;
- ops whose output size depends on the data: `nonzero` (`torch.where(cond)`), `masked_select`, indexing and
  `index_put_` with a boolean mask (except `t[mask] = scalar`, which ATen turns into `masked_fill_`), `unique`,
  `bincount`, `histc`, `repeat_interleave` without `output_size`;
- blocking copies: every device-to-host copy, and host-to-device copies without `non_blocking=True` (CUDA waits for
  the stream after a pageable copy, e.g. `torch.tensor(..., device=cuda)` of Python data).

On CPU there is no device, so the counter simulates one. Tensors on the "device" are the model's parameters and
buffers, what `.to(device)` or `torch.tensor`/`torch.as_tensor(..., device=...)` return for host data, and every
output of an op with a device input. Tensors made from nothing (`torch.zeros`, `torch.rand`) count as host until a
device tensor goes into them: the optimizer's step counters are host tensors on a GPU too, and the device tensors that
the hot paths make from nothing are touched by device tensors before any counted op. `.cpu()`, `.numpy()` and
`.tolist()` of a device tensor count as one device-to-host copy and give a host tensor; `.to("cpu")` is not told
apart from `.to(device)` and is not counted (the code uses `.cpu()`). The loader's work is on the host.
On CUDA the devices are real, and `torch.cuda.set_sync_debug_mode("warn")`'s warnings are counted as well, in
brackets: the runtime's own count, which is the truth where the two differ.

    python bench/host_syncs.py                   # CPU, simulated device
    python bench/host_syncs.py --device cuda     # GPU: op count and sync-debug count
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch.utils._pytree as pytree
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from pipeline.config import parse_params
from pipeline.datasets.miniature import generate
from pipeline.datasets.shards import load_split, prepare_dataset, shard_paths
from pipeline.datasets.specs import get_spec
from pipeline.networks.segmenter import build_segmenter
from pipeline.training import finetune
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.criteria import build_criterion
from pipeline.training.distributed import Processes
from pipeline.training.loop import seed_everything
from pipeline.training.precision import resolve_precision

SCALAR_READS = {"_local_scalar_dense", "equal"}
DATA_DEPENDENT = {"nonzero", "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive",
                  "unique_dim_consecutive", "bincount", "histc"}
WARNING = "CUDA sync-debug warning"


class SyncCounter(TorchDispatchMode):
    """Counts host synchronisations by kind, in segments that `mark(label)` starts (see the module docstring);
    nothing is counted before the first mark (building the model and the loss)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.simulate = device.type == "cpu"
        self.resident = WeakIdKeyDictionary()  # simulated device: the tensors on it
        self.segments: list[tuple[str, Counter]] = []
        self.debug_warnings: list = []  # CUDA: the sync-debug warnings so far
        self.seen_warnings = 0

    def on_device(self, t: torch.Tensor) -> bool:
        return t in self.resident if self.simulate else t.device.type != "cpu"

    def put(self, *objects) -> None:
        """Place tensors and modules' parameters and buffers on the simulated device."""
        for obj in objects:
            tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else [obj]
            for t in tensors:
                self.resident[t] = True

    def mark(self, label: str) -> None:
        """Start a segment; what came before goes to the previous one."""
        if not self.simulate:
            self.collect_warnings()
        self.segments.append((label, Counter()))

    def count(self, kind: str) -> None:
        if self.segments:
            self.segments[-1][1][kind] += 1

    def collect_warnings(self) -> None:
        """Adds the CUDA sync-debug warnings raised since the last call to the current segment."""
        new = self.debug_warnings[self.seen_warnings:]
        self.seen_warnings = len(self.debug_warnings)
        for w in new:
            if "synchronizing" in str(w.message):
                self.count(WARNING)

    def kind(self, func, args, kwargs) -> str | None:
        name = func.overloadpacket.__name__
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = any(self.on_device(t) for t in tensors)
        if name in SCALAR_READS and on_device:
            return "scalar read"
        if name in DATA_DEPENDENT and on_device:
            return "data-dependent size"
        if name == "repeat_interleave" and on_device and kwargs.get("output_size") is None:
            return "data-dependent size"
        if name in ("index", "index_put", "index_put_", "_index_put_impl_") and on_device:
            masks = [i for i in args[1] if i is not None and i.dtype in (torch.bool, torch.uint8)]
            if masks and not (name != "index" and len(args[1]) == 1 and args[2].numel() == 1
                              and not self.on_device(args[2])):
                return "boolean mask"
        if not self.simulate and name in ("_to_copy", "copy_"):
            src, dst_device = (args[0], kwargs.get("device")) if name == "_to_copy" else (args[1], args[0].device)
            non_blocking = kwargs.get("non_blocking", args[2] if name == "copy_" and len(args) > 2 else False)
            if dst_device is not None and dst_device.type != src.device.type:
                if dst_device.type == "cpu":
                    return "device-to-host copy"
                if not non_blocking:
                    return "blocking host-to-device copy"
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = self.kind(func, args, kwargs)
        if kind:
            self.count(kind)
        out = func(*args, **kwargs)
        if self.simulate and any(self.on_device(t) for t in pytree.tree_leaves((args, kwargs))
                                 if isinstance(t, torch.Tensor)):
            self.put(*(t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)))
        if not self.simulate:
            self.collect_warnings()
        return out

    @contextlib.contextmanager
    def counting(self):
        with contextlib.ExitStack() as stack:
            if self.simulate:
                stack.enter_context(self.simulated_transfers())
            else:
                self.debug_warnings = stack.enter_context(warnings.catch_warnings(record=True))
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                stack.callback(torch.cuda.set_sync_debug_mode, "default")
            stack.enter_context(self)
            yield self
            if not self.simulate:
                self.collect_warnings()

    @contextlib.contextmanager
    def simulated_transfers(self):
        """The copies between host and the simulated device, which a CPU run does not dispatch."""
        real = {name: getattr(torch.Tensor, name) for name in ("cpu", "numpy", "tolist", "to")}
        factories = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}
        counter = self

        def to_host(name):
            def method(self, *args, **kwargs):
                if counter.on_device(self):
                    counter.count("device-to-host copy")
                out = real[name](self, *args, **kwargs)
                if isinstance(out, torch.Tensor):
                    counter.resident.pop(out, None)
                return out
            return method

        def to(self, *args, **kwargs):
            out = real["to"](self, *args, **kwargs)
            moves = "device" in kwargs or any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args)
            if moves and not counter.on_device(self):
                if not kwargs.get("non_blocking", any(a is True for a in args)):
                    counter.count("blocking host-to-device copy")
                counter.put(out)
            return out

        def factory(name):
            def make(data, *args, **kwargs):
                out = factories[name](data, *args, **kwargs)
                if kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                    counter.count("blocking host-to-device copy")
                    counter.put(out)
                return out
            return make

        try:
            for name in ("cpu", "numpy", "tolist"):
                setattr(torch.Tensor, name, to_host(name))
            torch.Tensor.to = to
            for name in factories:
                setattr(torch, name, factory(name))
            yield
        finally:
            for name, method in real.items():
                setattr(torch.Tensor, name, method)
            for name, function in factories.items():
                setattr(torch, name, function)

def miniature_shards(root: Path) -> Path:
    """A few miniature ADE20K images, prepared into shards under `root`."""
    generate(root / "raw", seed=0, counts={"ade20k": {"train": 8, "val": 1}})
    prepare_dataset("ade20k", root / "raw" / "ade20k", root / "shards", shard_size=4, workers=0)
    return root / "shards"


def describe(counts: Counter) -> str:
    """'N (kind n, ...)' of the counted ops, then the CUDA sync-debug count where there is one."""
    ops = {kind: n for kind, n in counts.items() if kind != WARNING}
    text = f"{sum(ops.values())}" + (f" ({', '.join(f'{k} {n}' for k, n in sorted(ops.items()))})" if ops else "")
    return text + (f" [CUDA sync-debug: {counts[WARNING]}]" if WARNING in counts else "")


def count_decoder(decoder: str, raw: dict, args, shards: Path, device: torch.device) -> None:
    params = parse_params(dict(raw, decoder=decoder))
    run = dataclasses.replace(params.run(args.model, "default", 0), steps=args.steps)
    cfg, spec, procs = params.finetune, get_spec(run.setup.dataset), Processes()
    accumulation = cfg.accumulation(procs.world_size)
    counter = SyncCounter(device)
    micro_batches = itertools.count()
    with tempfile.TemporaryDirectory() as tmp, counter.counting():
        seed_everything(0)  # built inside, uncounted: the model and the loss's buffers go to the simulated device
        model = build_segmenter(
            decoder, spec.num_classes,
            decoder_kwargs=params.mask2former.decoder_kwargs if decoder == "mask2former" else None,
            timm_name=run.variant.timm_name, img_size=run.crop, patch_size=run.setup.patch_size,
            timm_kwargs=run.variant.timm_kwargs, normalization=run.setup.normalization).to(device)
        criterion = build_criterion(decoder, spec.num_classes, spec.ignore_index, params.mask2former, device)
        hook = model.register_forward_pre_hook(
            lambda *_: counter.mark(f"step {next(micro_batches) // accumulation + 1}"))
        finetune.train(model, shard_paths(shards, "train"), run, cfg, criterion, device, None,
                       Checkpointer(tmp, {}, 0, procs, cfg.workers), procs)
        hook.remove()
    print(f"{decoder}: {run.variant.timm_name} at {run.crop} px, micro-batch {cfg.micro_batch_size} x "
          f"{accumulation}, {device.type}")
    for step in range(1, args.steps + 1):
        segments = [c for label, c in counter.segments if label == f"step {step}"]
        print(f"  train step {step}: per micro-batch " + " | ".join(describe(c) for c in segments)
              + f"; per optimizer step {describe(sum(segments, Counter()))}")

    samples = load_split(shards, "val")[:1]
    evaluation = SyncCounter(device)
    evaluation.put(model)
    with evaluation.counting():
        evaluation.mark("image")
        confusion = finetune.evaluate(model, samples, run.crop, spec.num_classes, spec.ignore_index,
                                      resolve_precision(cfg.precision, device), device, show=False)[0]
        confusion.miou()  # the matrix read, wherever it lives
    print(f"  evaluate one {tuple(samples[0][1].shape[-2:])} image: {describe(evaluation.segments[0][1])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--params", default="params.yaml", help="the model, crop, batch and Mask2Former config")
    p.add_argument("--model", default="random", help="a `models` id of --params (its --params size), random init")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (the first one also builds state)")
    p.add_argument("--decoders", nargs="+", default=["linear", "mask2former"])
    args = p.parse_args()
    device = torch.device(args.device)
    raw = yaml.safe_load(Path(args.params).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        shards = miniature_shards(Path(tmp))
        for decoder in args.decoders:
            count_decoder(decoder, raw, args, shards, device)


if __name__ == "__main__":
    main()
