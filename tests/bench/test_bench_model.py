import json
import sys

import pytest
from adapter_helpers import one_thread
from conftest import TINY_RECIPE, requires_cuda

from mmadapter.cli import main
from mmadapter.config import load_recipe

FAST = ["--steps", "2", "--warmup", "1", "--samples-per-step", "6"]
ARM_KEYS = {
    "layout",
    "attention",
    "adapters",
    "trainable_parameters",
    "tokens_per_s",
    "step_time_s",
    "peak_memory_mib",
    "padded_fraction",
    "real_tokens_per_step",
    "losses",
}


def bench(capsys, *argv: str) -> dict:
    with one_thread():
        assert main(["bench", "model", *FAST, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_run() -> dict:
    """The default workload (tiny recipe + MoLoRA) on CPU, run once for the tests that read its report."""
    from io import StringIO
    from unittest import mock

    with mock.patch.object(sys, "stdout", StringIO()) as out, one_thread():
        assert main(["bench", "model", *FAST, "--device", "cpu", "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_reports_both_arms_and_their_ratios(default_run) -> None:
    r = default_run
    assert set(r["mmadapter"]) == ARM_KEYS and set(r["baseline"]) == ARM_KEYS
    assert set(r["ratios"]) == {"tokens_per_s", "step_time_s", "peak_memory_mib"}
    assert (r["device"], r["precision"], r["steps"], r["warmup"], r["samples_per_step"]) == ("cpu", "32-true", 2, 1, 6)
    assert r["trainable"] == ["projectors", "molora"]
    mine, base = r["mmadapter"], r["baseline"]
    assert (mine["layout"], mine["attention"]) == ("packed", "sdpa_varlen")
    assert (base["layout"], base["attention"]) == ("padded", "sdpa")
    assert mine["adapters"].startswith("MoLoRA rank 8 x 3 experts") and base["adapters"].startswith("PEFT LoRA rank 8")
    for arm in (mine, base):
        assert arm["tokens_per_s"] > 0 and arm["step_time_s"] > 0
        assert arm["peak_memory_mib"] is None  # CPU: no allocator figure, none invented
        assert len(arm["losses"]) == len(arm["real_tokens_per_step"]) == 3
    assert r["ratios"]["tokens_per_s"] == pytest.approx(mine["tokens_per_s"] / base["tokens_per_s"])
    assert r["ratios"]["step_time_s"] == pytest.approx(mine["step_time_s"] / base["step_time_s"])
    assert r["ratios"]["peak_memory_mib"] is None


def test_both_arms_see_the_same_real_tokens(default_run) -> None:
    mine, base = default_run["mmadapter"]["real_tokens_per_step"], default_run["baseline"]["real_tokens_per_step"]
    assert mine == base
    assert len(set(mine)) > 1  # a different mix each step


def test_step_zero_losses_agree_from_identical_weights_and_zero_lora(default_run) -> None:
    # B = 0 in MoLoRA and in PEFT LoRA: both arms are exactly the base model at step 0
    mine, base = default_run["mmadapter"]["losses"], default_run["baseline"]["losses"]
    assert mine[0] == pytest.approx(base[0], rel=1e-5, abs=1e-6)
    assert mine[1] != pytest.approx(mine[0], rel=1e-6)  # the optimizer step moved the trainable parameters


def test_padding_costs_the_baseline_only(default_run) -> None:
    assert default_run["mmadapter"]["padded_fraction"] == 0.0
    assert 0.0 < default_run["baseline"]["padded_fraction"] < 1.0


def test_molora_has_one_lora_per_expert_where_peft_has_one(default_run) -> None:
    from mmadapter.config import load_recipe
    from mmadapter.model import MultimodalLM

    model = MultimodalLM.from_recipe(load_recipe(TINY_RECIPE))
    projectors = sum(p.numel() for p in model.projectors.parameters())
    lora = 2 * 8 * (64 + 64 + 64 + 32 + 64 + 32 + 64 + 64)  # 2 layers, r=8 on q, k (32 out), v (32 out), o
    assert default_run["baseline"]["trainable_parameters"] == projectors + lora
    assert default_run["mmadapter"]["trainable_parameters"] == projectors + 3 * lora


def test_a_recipe_without_adapters_trains_the_same_groups_in_both(capsys) -> None:
    r = bench(capsys, "--recipe", str(TINY_RECIPE))  # as it is: projectors + the whole LLM, no PEFT needed
    assert r["trainable"] == ["projectors", "llm"]
    assert r["mmadapter"]["adapters"] == r["baseline"]["adapters"] == "none"
    assert r["mmadapter"]["trainable_parameters"] == r["baseline"]["trainable_parameters"]
    assert r["mmadapter"]["losses"][0] == pytest.approx(r["baseline"]["losses"][0], rel=1e-5, abs=1e-6)


def test_prints_a_table_of_both_arms_and_the_ratios(capsys) -> None:
    with one_thread():
        assert main(["bench", "model", "--steps", "1", "--warmup", "0", "--samples-per-step", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "tokens/s" in lines[1] and "peak MiB" in lines[1]
    assert lines[2].startswith("mmadapter ") and "packed, sdpa_varlen" in lines[2]
    assert lines[3].startswith("HF + PEFT ") and "padded, sdpa" in lines[3]
    assert lines[4].startswith("mmadapter / HF") and lines[4].count("x") == 2


def test_activation_checkpointing_recomputes_in_both_arms_and_changes_no_loss(capsys, default_run) -> None:
    from unittest import mock

    from transformers import PreTrainedModel

    enable = PreTrainedModel.gradient_checkpointing_enable
    with mock.patch.object(PreTrainedModel, "gradient_checkpointing_enable", autospec=True, side_effect=enable) as spy:
        r = bench(capsys, "--device", "cpu", "train.activation_checkpointing=true")
    assert spy.call_count == 2  # the mmadapter LLM and the baseline's, each once
    assert r["activation_checkpointing"] is True and default_run["activation_checkpointing"] is False
    for arm in ("mmadapter", "baseline"):  # recomputing the layers in backward is the same arithmetic
        assert r[arm]["losses"] == pytest.approx(default_run[arm]["losses"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samples-per-step", "40"], "more than data.max_tokens=1024"),
        (['model.gated_attention={"mode": "prompt"}'], "model.gated_attention: the bench's Hugging Face"),
        (["--stage", "nope"], "--stage 'nope': the recipe's stages are ['bench']"),
        (["train.precision=16-mixed"], "needs a gradient scaler"),
    ],
)
def test_refuses_what_it_cannot_compare(capsys, argv: list[str], message: str) -> None:
    assert main(["bench", "model", "--steps", "1", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_without_peft_says_how_to_install_it(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    assert main(["bench", "model", "--steps", "1", "--warmup", "0", "--samples-per-step", "2"]) == 2
    assert "pip install 'mmadapter[bench]'" in capsys.readouterr().err


@requires_cuda
@pytest.mark.gpu
def test_cuda_reports_peak_memory_of_each_arm(capsys) -> None:
    r = bench(capsys, "--device", "cuda")
    assert r["device"].startswith("cuda") and r["precision"] == "bf16-mixed"
    for arm in ("mmadapter", "baseline"):
        assert r[arm]["peak_memory_mib"] > 0
    assert r["ratios"]["peak_memory_mib"] > 0
    assert r["mmadapter"]["real_tokens_per_step"] == r["baseline"]["real_tokens_per_step"]


def test_the_baselines_frozen_llm_trains_only_its_lora_dropout_as_ours_does() -> None:
    import torch

    from mmadapter.bench.baseline import baseline_arm
    from mmadapter.bench.model import DEFAULT_OVERRIDES

    pytest.importorskip("peft")
    recipe = load_recipe(TINY_RECIPE, [*DEFAULT_OVERRIDES, "model.molora.dropout=0.1"])
    arm = baseline_arm(recipe, recipe.train.stages[0], 0, torch.device("cpu"), [])
    training = {name for name, m in arm.model.llm.named_modules() if m.training}
    assert training and all("lora_dropout" in name for name in training), sorted(training)[:5]
    assert all(m.training for m in arm.model.projectors.modules())
