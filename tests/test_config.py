import os
import subprocess
import typing

import pytest
import yaml

from pipeline.config import SETUP_KEYS, load_params, parse_params
from pipeline.errors import ConfigError
from pipeline.networks.choices import Decoder
from tests.conftest import REPO


def test_repository_params_load_and_resolve_every_run(raw_params):
    params = parse_params(raw_params)
    for model in params.models:
        for setting in params.settings:
            run = params.run(model, setting, params.seeds[0])
            assert run.crop % run.setup.patch_size == 0
            assert run.name == f"{model}-{setting}-{params.seeds[0]}"


def test_settings_override_only_their_keys(raw_params):
    params = parse_params(raw_params)
    base = params.setup
    gta = params.setup_for("gta5")
    assert (gta.dataset, gta.eval_dataset) == ("gta5", "cityscapes")
    assert {k for k in SETUP_KEYS if getattr(gta, k) != getattr(base, k)} == {"dataset", "eval_dataset"}
    assert params.setup_for("linear_probing").freeze_encoder is True
    assert params.setup_for("patch8").patch_size == 8
    large = params.run(params.models[0], "vit_large", params.seeds[0])
    assert large.variant == params.model_cfg[params.models[0]].variants["large"]


def test_paper_settings_are_all_defined(raw_params):
    expected = {"default", "linear_probing", "mask2former", "vit_large", "patch8", "pascal_voc", "cityscapes", "gta5"}
    assert expected <= set(raw_params["setting_cfg"])


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda p: p.update(models=["nope"]), "models[0]: unknown value 'nope'"),
        (lambda p: p.update(settings=["default", "bogus"]), "settings[1]: unknown value 'bogus'"),
        (lambda p: p.update(dataset="imagenet"), "dataset in base setup: unknown value 'imagenet'"),
        (lambda p: p.update(decoder="unet"), "decoder: unknown value 'unet'; allowed: ['linear', 'mask2former']"),
        (lambda p: p.update(patch_size=20), "patch_size in base setup"),
        (lambda p: p["setting_cfg"].update(weird={"learning_rate": 1}),
         "setting_cfg.weird: unknown key(s) ['learning_rate']; allowed: ['decoder', "),
        (lambda p: p["finetune"].update(lr="1e-4"), "write floats as 1.0e-4"),
        (lambda p: p["finetune"].update(batch_size=0), "finetune.batch_size must be positive"),
        (lambda p: p["finetune"].update(micro_batch_size=5), "must be a multiple of finetune.micro_batch_size"),
        (lambda p: p.update(datasets=["ade20k"]), "dataset in setting 'pascal_voc'"),
        (lambda p: p["setting_cfg"].update(patch8={"patch_size": 7}), "patch_size in setting 'patch8'"),
        (lambda p: p["model_cfg"].update(Bad={"pretraining": "random"}), "not a valid id"),
        (lambda p: p["rank"].update(base_setting="nope"), "rank.base_setting"),
        (lambda p: p["rank"].update(resamples=0), "rank.resamples must be positive"),
        (lambda p: p["rank"].update(confidence=95), "rank.confidence must be in (0, 1)"),
        (lambda p: p["decoder_cfg"]["mask2former"].update(num_heads=3), "must be a multiple of num_heads (3)"),
        (lambda p: p["decoder_cfg"]["mask2former"].update(num_queries=0), "decoder_cfg.mask2former.num_queries must"),
        (lambda p: p["decoder_cfg"]["mask2former"].update(importance_ratio=1.5), "importance_ratio must be in"),
        (lambda p: p["decoder_cfg"]["mask2former"].pop("ffn_dim"), "decoder_cfg.mask2former.ffn_dim: missing"),
        (lambda p: p["model_cfg"]["random"]["base"].update(pretrain_tokens=-4), "random.base.pretrain_tokens must"),
        (lambda p: p["model_cfg"]["random"]["base"].update(timm_kwargs=[1]), "random.base.timm_kwargs: expected"),
        (lambda p: p["model_cfg"]["random"].update(compile="no"), "model_cfg.random.compile: expected bool"),
        (lambda p: p.update(extra_key=1), "unknown top-level key(s) ['extra_key']"),
        (lambda p: p["pretrain"].update(presence_cell=20), "pretrain.presence_cell (20) must divide"),
        (lambda p: p["pretrain"].pop("dino"),
         "pretrain.dino: missing; model_cfg.dino.pretraining is 'dino'"),
        (lambda p: p["pretrain"]["dino"].update(local_size=40),
         "pretrain.dino.local_size (40) must be a multiple of model_cfg.dino.base's patch size (16)"),
        (lambda p: p["pretrain"]["dino"].update(local_scale=[0.5, 0.4]), "pretrain.dino.local_scale: expected [low, "),
        (lambda p: p["pretrain"]["dino"].update(teacher_momentum=1.0), "pretrain.dino.teacher_momentum must be in"),
        (lambda p: p["pretrain"]["clip"].update(text_heads=3), "pretrain.clip.text_width (64) must be a multiple of"),
        (lambda p: p["model_cfg"]["clip"].update(pretraining="siglip"), "model_cfg.clip.pretraining: unknown value "
         "'siglip' (did you mean 'clip'?); allowed: ['random', 'supervised', 'mim', 'clip', 'dino', 'hub', 'file']"),
        (lambda p: p.update(downloads=["places365"]), "downloads[0]: unknown value 'places365'"),
        (lambda p: p["download"].update(retries=-1), "download.retries must be >= 0, got -1"),
        (lambda p: p["download"].update(timeout="60"), "download: unknown key(s) ['timeout']"),
        (lambda p: p["download"].update(mirrors={"val2017.zip": "ftp://x"}), "download.mirrors.val2017.zip"),
        (lambda p: p["download"].update(mirrors=["x"]), "download.mirrors: expected dict"),
        (lambda p: p["data_cfg"].pop("cityscapes"), "dataset in setting 'cityscapes' (setting_cfg.cityscapes over the base setup): 'cityscapes' is trained"),
        (lambda p: p.update(towers=["ghost"]), "towers[0]: unknown value 'ghost'"),
        (lambda p: p.update(methods=["clip"]), "methods[0]: unknown value 'clip'"),
        (lambda p: p["method_cfg"].update(neg={"concept_weight": -1.0}), "method_cfg.neg.concept_weight must be >= 0"),
        (lambda p: p["concepts"].update(backend="regex"), "concepts.backend: unknown value 'regex'"),
        (lambda p: p["concepts"].update(max_concepts=0), "concepts.max_concepts must be positive"),
        (lambda p: p["align"].update(concept_target="soft"), "align.concept_target: unknown value 'soft'"),
        (lambda p: p["align"].update(feature_cache="gpu"), "align.feature_cache: unknown value 'gpu'"),
        (lambda p: p["align"].update(image_size=100), "align.image_size (100) must be a multiple of tower"),
        (lambda p: p["align"].update(warmup=1.5), "align.warmup must be in [0, 1) (a fraction of the steps), got 1.5"),
        (lambda p: p["align"].update(betas=[0.9]), "align.betas: expected [float, float], got [0.9]"),
        (lambda p: p["align"].update(batch_size=0), "align.batch_size must be positive"),
        (lambda p: p["text_tower"].update(width=64, heads=3), "text_tower.width (64) must be a multiple of text_tower.heads"),
        (lambda p: p["zeroshot"].update(benchmarks=["imagenet"]), "zeroshot.benchmarks[0]: unknown value"),
        (lambda p: p["zeroshot"].update(stride=200), "zeroshot.stride (200) must not exceed"),
        (lambda p: p["zeroshot"]["background_threshold"].pop("pascal_voc"), "zeroshot.background_threshold.pascal_voc: missing"),
        (lambda p: p["zeroshot"]["background_threshold"].update(gta5=0.3), "['gta5'] not in zeroshot.benchmarks"),
        (lambda p: p.update(datasets=[d for d in p["datasets"] if d != "coco_stuff"]), "'coco_stuff' is not in datasets"),
    ],
)
def test_bad_params_name_the_key(raw_params, edit, fragment):
    edit(raw_params)
    with pytest.raises(ConfigError) as err:
        parse_params(raw_params)
    assert fragment in str(err.value)


def test_zero_shot_datasets_need_no_training_config(raw_params):
    raw_params["datasets"] = [name for name in raw_params["datasets"] if name != "coco_object"] + ["coco_object"]
    raw_params["data_cfg"].pop("coco_object", None)
    assert "coco_object" in parse_params(raw_params).datasets


def test_download_section(raw_params):
    raw_params["downloads"] = ["ade20k", "cityscapes"]
    raw_params["download"]["mirrors"] = {"ADEChallengeData2016.zip": "https://mirror.example/ade.zip"}
    params = parse_params(raw_params)
    assert params.downloads == ("ade20k", "cityscapes")
    assert params.download.mirrors == {"ADEChallengeData2016.zip": "https://mirror.example/ade.zip"}
    assert params.download.backoff_s == 2.0 and isinstance(params.download.timeout_s, float)


def test_unknown_decoder_lists_allowed_values(raw_params):
    raw_params["decoder"] = "unet"
    with pytest.raises(ConfigError, match=r"allowed: \['linear'"):
        parse_params(raw_params)


def test_patch_error_lists_divisors(raw_params):
    raw_params["settings"] = ["default", "patch8"]
    raw_params["setting_cfg"]["patch8"] = {"patch_size": 10}
    crop = raw_params["data_cfg"][raw_params["dataset"]]["crop"]
    with pytest.raises(ConfigError) as err:
        parse_params(raw_params)
    divisors = [d for d in range(1, 33) if crop % d == 0]
    assert f"10 does not divide the crop {crop}" in str(err.value) and f"allowed: {divisors}" in str(err.value)


def test_setting_outside_the_study_is_not_checked_until_used(raw_params):
    raw_params["settings"] = ["default"]
    raw_params["setting_cfg"]["patch8"] = {"patch_size": 12}
    params = parse_params(raw_params)
    with pytest.raises(ConfigError, match="setting: unknown value 'patch8'"):
        params.run(params.models[0], "patch8", params.seeds[0])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("decoder: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_a_model_can_opt_out_of_compile(raw_params):
    raw_params["finetune"]["compile"] = True
    raw_params["model_cfg"]["mim"]["compile"] = False
    params = parse_params(raw_params)
    assert params.run("random", "default", 0).compile and not params.run("mim", "default", 0).compile
    raw_params["finetune"]["compile"] = False
    assert not parse_params(raw_params).run("random", "default", 0).compile


def test_config_decoders_match_the_network_registry():
    from pipeline.networks.decoders import DECODERS

    assert set(typing.get_args(Decoder)) == set(DECODERS)


def test_paper_params_file_is_valid():
    raw = yaml.safe_load((REPO / "params-paper.yaml").read_text())
    params = parse_params(raw)
    assert len(params.models) == 10 and len(params.settings) == 8 and params.seeds == (0, 1, 2)
    assert params.towers[0] == "dinov2_reg" and set(params.towers) == {*params.models, "dinov2_reg"}
    assert params.encoders == (*params.models, "dinov2_reg")
    assert params.variant("dinov2_reg", "base").timm_name == "vit_base_patch14_reg4_dinov2.lvd142m"
    align = params.align
    assert align.scaled_lr == pytest.approx(4.8e-4) and align.steps == 10 * 98
    assert (align.betas, align.eps, align.weight_decay, align.warmup) == ((0.9, 0.98), 1e-6, 0.2, 0.1)
    assert (params.text_tower.width, params.text_tower.layers, params.text_tower.heads) == (512, 12, 8)
    assert params.method_cfg["simzss"].concept_weight == 0.05 and params.method_cfg["lit"].concept_weight == 0
    zs = params.zeroshot
    assert (zs.short_side, zs.window, zs.stride) == (448, 448, 224) and len(zs.benchmarks) == 8
    assert params.data_cfg["ade20k"].steps == 40000 and params.data_cfg["cityscapes"].crop == 1024
    assert params.finetune.compile and not params.run("eva02", "default", 0).compile
    m2f = params.mask2former
    assert (m2f.hidden_dim, m2f.num_queries, m2f.num_blocks, m2f.num_heads, m2f.ffn_dim) == (256, 100, 9, 8, 2048)
    assert (m2f.num_points, m2f.oversample_ratio, m2f.importance_ratio) == (12544, 3.0, 0.75)
    assert (m2f.class_weight, m2f.mask_weight, m2f.dice_weight, m2f.no_object_weight) == (2.0, 5.0, 5.0, 0.1)


# ---- The tests' own params, the encoders, the paper's model list --------------------------------------------------


def test_the_tests_use_the_committed_params_not_the_workspace(tmp_path, raw_params):
    """An interrupted `dvc exp run -S decoder=mask2former` leaves the experiment's params in the workspace."""
    from tests.conftest import study_params_raw

    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    assert study_params_raw(tmp_path) == raw_params  # not a git checkout: the file
    for cmd in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "study"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, env=env, check=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw_params, "decoder": "mask2former"}, sort_keys=False))
    assert study_params_raw(tmp_path) == raw_params and raw_params["decoder"] == "linear"

    schema_change = {key: value for key, value in raw_params.items() if key != "encoders"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(schema_change, sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "before encoders existed"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    with pytest.warns(UserWarning, match="the committed one does not load with the working tree's code"):
        assert study_params_raw(tmp_path) == raw_params


def test_a_tower_need_not_be_a_benchmark_model(raw_params):
    raw_params.update(models=["random", "supervised"], towers=["mim"], encoders=["random", "supervised", "mim"])
    params = parse_params(raw_params)
    assert params.tower_variant("mim") == params.variant("mim", "base")  # pretrain@mim-base makes it ready
    with pytest.raises(ConfigError, match="model: unknown value 'mim'"):
        params.run("mim", "default", 0)  # and no finetune@mim-* run exists


@pytest.mark.parametrize("models, towers, fragment", [
    (["random", "supervised", "mim"], ["random"],
     "models[2]: 'mim' is missing from encoders ['random', 'supervised'], the ids whose weights pretrain@"),
    (["random"], ["supervised", "mim"], "towers[1]: 'mim' is missing from encoders ['random', 'supervised']"),
])
def test_every_model_and_tower_must_be_an_encoder(raw_params, models, towers, fragment):
    raw_params.update(models=models, towers=towers, encoders=["random", "supervised"])
    with pytest.raises(ConfigError) as err:
        parse_params(raw_params)
    assert fragment in str(err.value)


def test_encoders_are_model_cfg_ids(raw_params):
    raw_params["encoders"] = [*raw_params["encoders"], "ghost"]
    with pytest.raises(ConfigError, match=rf"encoders\[{len(raw_params['encoders']) - 1}\]: unknown value 'ghost'"):
        parse_params(raw_params)


def test_the_paper_study_fine_tunes_the_papers_ten_models():
    """The benchmark's ten VFMs (paper Table 2), written out here rather than read from the file under test."""
    paper = load_params(REPO / "params-paper.yaml")
    assert sorted(paper.models) == sorted([
        "eva02_clip", "eva02", "dinov2", "beit3", "siglip", "dfn_clip", "deit3_in21k", "deit3_in1k", "mae", "sam"])
    assert "dinov2_reg" in paper.towers and "dinov2_reg" not in paper.models  # the SimZSS tower is not fine-tuned
