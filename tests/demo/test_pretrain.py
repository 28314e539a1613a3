"""Demo step 1 on a tiny data set: each component learns, is saved, and its registry family loads it by path —
also through the demo recipes, whose stages train only projectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_espeak
from safetensors.torch import load_file

from mmadapter.config import LLMSpec
from mmadapter.data.synthetic import DataSizes, SyntheticData, plan_images, render_image, synthesize_data
from mmadapter.data.synthetic_graphs import COUNT_WORDS, TOPICS, random_graph
from mmadapter.demo.audio_encoder import AudioPretrainSettings
from mmadapter.demo.graph_encoder import GraphPretrainSettings
from mmadapter.demo.language_model import LlmPretrainSettings, generate_answers, text_example
from mmadapter.demo.pretrain import pretrain_all
from mmadapter.demo.settings import PretrainSettings
from mmadapter.demo.steps import PretrainResult, side_by_side
from mmadapter.demo.vision_encoder import VisionPretrainSettings, slot_labels
from mmadapter.encoders import ENCODERS
from mmadapter.encoders.gnn import GnnSpec
from mmadapter.encoders.hf_vision import HfVisionSpec
from mmadapter.encoders.whisper import WhisperSpec
from mmadapter.llm import LLMS

pytestmark = requires_espeak

SIZES = DataSizes(speech={"en": 24, "de": 8}, speech_test={"en": 4, "de": 2}, images=40, images_test=8)
AUDIO = AudioPretrainSettings(
    d_model=32, layers=1, heads=2, ffn=64, steps=12, batch_size=8, warmup_steps=2, log_every=0
)
VISION = VisionPretrainSettings(
    hidden=32, layers=1, heads=2, mlp=64, extra_images=40, steps=12, batch_size=16, log_every=0
)
LLM = LlmPretrainSettings(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, steps=25, batch_size=8, lr=1e-2)
GRAPH = GraphPretrainSettings(hidden=32, graphs=200, test_graphs=60, steps=120, batch_size=32, lr=1e-2, log_every=0)


def falls(result: PretrainResult) -> bool:
    return np.mean(result.losses[-3:]) < 0.8 * np.mean(result.losses[:3])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    return synthesize_data(tmp_path_factory.mktemp("demo_data"), SIZES, seed=0, workers=2)


@pytest.fixture(scope="module")
def pretrained(data: SyntheticData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PretrainResult]:
    """All four, one after the other (the quick demo runs them side by side)."""
    settings = PretrainSettings(side_by_side=False, audio=AUDIO, vision=VISION, llm=LLM, graph=GRAPH)
    results = pretrain_all(data, tmp_path_factory.mktemp("pretrained"), settings)
    assert list(results) == ["audio_encoder", "vision_encoder", "llm", "graph_encoder"]
    return {"audio": results["audio_encoder"], "vision": results["vision_encoder"], **results}


@pytest.fixture(scope="module")
def graph_encoder(pretrained: dict[str, PretrainResult]) -> PretrainResult:
    return pretrained["graph_encoder"]


def test_side_by_side_returns_each_result_and_keeps_each_jobs_output_apart(tmp_path: Path, capsys) -> None:
    results = side_by_side({"a": (print, ("from a",)), "b": (divmod, (7, 2))}, tmp_path)
    assert results == {"a": None, "b": (3, 1)}
    assert (tmp_path / "a.log").read_text() == "from a\n" and (tmp_path / "b.log").read_text() == ""
    assert "from a\n" in capsys.readouterr().out
    with pytest.raises(ValueError, match="invalid literal"):
        side_by_side({"bad": (int, ("x",))}, tmp_path)


@pytest.mark.slow
def test_audio_encoder_learns_and_loads_by_path_as_whisper(data: SyntheticData, pretrained) -> None:
    result = pretrained["audio"]
    assert len(result.losses) == AUDIO.steps and falls(result)
    assert set(result.metrics) >= {"wer_en", "wer_de"} and result.seconds > 0
    encoder = ENCODERS.get("whisper")(WhisperSpec(name="whisper", name_or_path=str(result.path)))
    assert (encoder.embed_dim, encoder.n_mels, len(encoder.encoder.layers)) == (32, 80, 1)
    saved = load_file(result.path / "model.safetensors")
    assert torch.equal(encoder.encoder.conv1.weight, saved["conv1.weight"])
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    mel = encoder.transform(wave)
    with torch.no_grad():
        feats, lengths = encoder(mel[None], torch.tensor([mel.shape[-1]]))
    assert feats.shape == (1, 50, 32) and lengths.tolist() == [50]
    assert (result.path / "preprocessor_config.json").is_file() and (result.path / "ctc_units.json").is_file()


@pytest.mark.slow
def test_vision_encoder_learns_and_loads_by_path_as_hf_vision(pretrained) -> None:
    result = pretrained["vision"]
    assert falls(result) and 0.0 <= result.metrics["accuracy"] <= result.metrics["attribute_accuracy"] <= 1.0
    spec = HfVisionSpec(name="hf_vision", name_or_path=str(result.path), layer=-1, cls_token=True)
    encoder = ENCODERS.get("hf_vision")(spec)
    pixels = encoder.transform(render_image(plan_images(1, seed=0)[0]))
    assert pixels.shape == (3, 64, 64)
    with torch.no_grad():
        tokens, _ = encoder(pixels[None])
    assert tokens.shape == (1, 65, 32)  # 8×8 patches and the class token
    assert slot_labels(plan_images(1, seed=0)[0].objects)[1] < 5  # the first slot always holds a colour


@pytest.mark.slow
def test_llm_learns_and_loads_by_path_with_its_tokenizer(pretrained) -> None:
    result = pretrained["llm"]
    assert falls(result) and set(result.metrics) == {"accuracy_asr", "accuracy_caption"}
    model, tokenizer = LLMS.get("causal_lm")(LLMSpec(name_or_path=str(result.path), dtype="float32"))
    assert model.config.num_hidden_layers == 1 and len(tokenizer) == 260
    import random

    _, prompt, _ = text_example(random.Random(0))
    assert isinstance(generate_answers(model, tokenizer, [prompt])[0], str)


def test_text_examples_cover_every_task_with_answers_that_follow_from_the_rendition() -> None:
    import random

    rng = random.Random(0)
    seen: dict[str, int] = {}
    for _ in range(400):
        task, prompt, answer = text_example(rng, caption_fraction=0.4, instruct_fraction=0.5, graph_fraction=0.2)
        seen[task] = seen.get(task, 0) + 1
        assert "<audio>" not in prompt and "<image>" not in prompt and "<graph>" not in prompt
        if task.startswith("graph_"):
            initial, count = prompt.split()[-1]  # the rendition ends the question: "p3"
            topic = next(t for t in TOPICS if t[0] == initial)
            assert answer == (topic if task == "graph_topic" else COUNT_WORDS[int(count)])
        elif task == "asr":
            assert all(d in prompt for d in answer.split())
    assert set(seen) == {"asr", "caption", "vqa", "graph_topic", "graph_count"}
    assert 0.1 < seen.get("graph_topic", 0) / 400 + seen.get("graph_count", 0) / 400 < 0.3


@pytest.mark.slow
def test_graph_encoder_learns_and_loads_by_path_as_gnn(pretrained, graph_encoder: PretrainResult) -> None:
    result = graph_encoder
    assert len(result.losses) == GRAPH.steps and falls(result)
    assert result.metrics["node_accuracy"] > 0.5  # 5 topics: chance is 0.2
    model, tokenizer = LLMS.get("causal_lm")(LLMSpec(name_or_path=str(pretrained["llm"].path), dtype="float32"))
    options = GRAPH.encoder_options(model.config.hidden_size)
    encoder = ENCODERS.get("gnn")(GnnSpec(name="gnn", name_or_path=str(result.path), **options))
    encoder.bind_llm(model, tokenizer)
    assert torch.equal(encoder.convs[0].lin_l.weight, load_file(result.path)["convs.0.lin_l.weight"])
    graph = random_graph(np.random.default_rng(1))
    from torch_geometric.data import Batch

    data = encoder.transform({"edge_index": graph["edge_index"], "node_text": graph["node_text"]})
    with torch.no_grad():
        nodes, counts = encoder(Batch.from_data_list([data]), torch.tensor([data.num_nodes]))
    assert nodes.shape == (1, data.num_nodes, GRAPH.hidden) and counts.tolist() == [data.num_nodes]
    assert torch.isfinite(nodes).all()
