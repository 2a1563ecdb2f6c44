import pytest
import torch
from torch import nn

from pipeline.errors import CheckpointError
from pipeline.networks.weights import load_state_dict_file, load_strict, save_state_dict, verify_weights


def small_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_safetensors_round_trip_is_atomic(tmp_path):
    module = small_module()
    path = tmp_path / "sub" / "w.safetensors"
    save_state_dict(module, path)
    assert_same(load_state_dict_file(path), module.state_dict())
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]


def test_save_refuses_non_safetensors_suffix(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        save_state_dict(small_module(), tmp_path / "w.pt")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"module": sd},
    ],
    ids=["plain", "model", "state_dict+ddp", "module"],
)
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".pth.timm"])
def test_torch_files_are_unwrapped(tmp_path, wrap, suffix):
    state_dict = small_module().state_dict()
    path = tmp_path / f"w{suffix}"
    torch.save(wrap(state_dict), path)
    assert_same(load_state_dict_file(path), state_dict)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_state_dict_file(path)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_truncated_file_is_named(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_state_dict(small_module(), path)
    else:
        torch.save(small_module().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=name):
        load_state_dict_file(path)


def test_non_dict_content_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="list.pt"):
        load_state_dict_file(path)
    path = tmp_path / "meta.pt"
    torch.save({"weight": torch.zeros(1), "step": 7}, path)
    with pytest.raises(CheckpointError, match="step"):
        load_state_dict_file(path)


def test_load_strict_lists_every_problem():
    module = small_module()
    state_dict = dict(small_module().state_dict())
    del state_dict["1.bias"]
    state_dict["2.weight"] = torch.zeros(3)
    state_dict["0.weight"] = torch.zeros(5, 4)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_strict(module, state_dict, source="my_ckpt.safetensors")
    message = str(info.value)
    assert "my_ckpt.safetensors" in message
    assert "missing keys (1): 1.bias" in message
    assert "unexpected keys (1): 2.weight" in message
    assert "0.weight: expected (3, 4) vs got (5, 4)" in message
    assert_same(module.state_dict(), before)


def test_load_strict_loads_matching_weights():
    source, target = small_module(), nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    load_strict(target, source.state_dict(), source="x")
    assert_same(target.state_dict(), source.state_dict())


def test_a_written_file_records_its_tensors_hash_and_an_edit_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict(small_module(), path)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the last byte of the last tensor
    with pytest.raises(CheckpointError, match=r"w\.safetensors: its tensors differ from the sha256 recorded when it "
                                              r"was written \(damaged or edited since\)$"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match=r"\(damaged or edited since\); re-run: dvc repro -f -s pretrain@m-base$"):
        verify_weights(path, "pretrain@m-base")
