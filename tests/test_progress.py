"""Progress you can watch: a tqdm bar on a terminal, plain lines in logs; validation every `val_every` steps that
leaves the training unchanged."""
import io
import json

import pytest
import yaml

from pipeline import paths
from pipeline.evaluation import previews
from pipeline.training.progress import Progress
from tests import training_workspace as ws


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_plain_line_every_n_steps_and_at_the_end():
    log = io.StringIO()
    with Progress("finetune@m-default-0", 10, initial=2, every=4, stream=log) as progress:
        for step in range(3, 11):
            progress.update(step, loss=0.81234, lr=9.8e-5)
        progress.write("validation: miou 0.3000")
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "finetune@m-default-0: step 4/10", "finetune@m-default-0: step 8/10", "finetune@m-default-0: step 10/10"]
    assert all("<" in line and "step/s" in line and "loss=0.8123" in line and "lr=9.80e-05" in line
               for line in lines[:3])  # elapsed<ETA, rate, values
    assert lines[3] == "validation: miou 0.3000"
    assert "\r" not in log.getvalue()


def test_a_terminal_gets_one_redrawn_bar_and_no_plain_lines():
    terminal = Terminal()
    with Progress("evaluate@m", 5, unit="image", every=1, stream=terminal) as progress:
        for done in range(1, 6):
            progress.update(done)
    text = terminal.getvalue()
    assert "\r" in text and "5/5" in text and "image" in text
    assert "\n" not in text.rstrip("\n")  # one line, redrawn in place


def test_other_processes_and_every_zero_print_nothing():
    log = io.StringIO()
    for progress in (Progress("x", 3, enabled=False, stream=log), Progress("x", 3, every=0, stream=log)):
        for step in range(1, 4):
            progress.update(step, loss=1.0)
        progress.close()
    assert log.getvalue() == ""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, repo_params_raw):
    root = tmp_path_factory.mktemp("progress")
    ws.build(root, repo_params_raw)
    return root


def finetune(root, val_every: int) -> tuple[bytes, str]:
    # Mask2Former: its loss samples points from the global torch RNG, which a validation must leave as it was.
    m2f = yaml.safe_load((root / "params.yaml").read_text())["decoder_cfg"]["mask2former"]
    m2f.update(hidden_dim=16, num_queries=6, num_blocks=2, num_heads=2, ffn_dim=32, num_points=64)
    ws.set_params(root, decoder="mask2former", decoder_cfg={"mask2former": m2f},
                  finetune={"val_every": val_every}, checkpoint={"every": 0})
    output = ws.run_stage(root, "finetune")
    return (root / paths.finetune_dir(ws.FINETUNE_RUN) / "segmenter.safetensors").read_bytes(), output


def test_validation_every_n_steps_is_logged_and_leaves_the_training_unchanged(prepared):
    """12 optimizer steps, validated at 4, 8 and 12: the same trained weights, bit for bit, as without validation
    (the validation restores every RNG state and touches neither the optimizer nor the data order)."""
    weights, output = finetune(prepared, 0)
    assert f"finetune@{ws.FINETUNE_RUN}: step 12/12 (100%)" in output  # captured output: plain lines
    assert "validation" not in output
    curves = prepared / paths.train_plots(ws.FINETUNE_RUN) / "plots" / "metrics"
    assert not (curves / "val").exists()
    validated, output = finetune(prepared, 4)
    assert validated == weights
    assert output.count("validation miou") == 3
    rows = (curves / "val" / "miou.tsv").read_text().splitlines()
    assert [int(row.split("\t")[0]) for row in rows[1:]] == [4, 8, 12]
    final = json.loads((prepared / paths.finetune_metrics(ws.FINETUNE_RUN)).read_text())
    assert float(rows[-1].split("\t")[1]) == pytest.approx(final["miou"])  # the last validation is the evaluation
    evaluation = previews.load(prepared / paths.finetune_previews(ws.FINETUNE_RUN))
    shown = len(evaluation.previews)
    assert shown == min(4, final["eval_images"]) and [p.key for p in evaluation.previews] == sorted(
        p.key for p in evaluation.previews)
    assert evaluation.confusion.sum() > 0
