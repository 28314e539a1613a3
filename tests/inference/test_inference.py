"""``mmadapter infer``: single files, manifests, folders and shards; bad items never stop the others."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT, nudged_artefact, tar_cut_in_last_sample, tiny_recipe
from conftest import infer_cli as infer

from mmadapter import inference
from mmadapter.data import DEFAULT_PROMPTS, decode_audio
from mmadapter.inference import GenerationOptions, InferenceRunner
from mmadapter.inference_inputs import file_request, first_requests
from mmadapter.model import MultimodalLM

MEDIA = ROOT / "tests" / "assets" / "media"
SHARDS = ROOT / "tests" / "assets" / "shards"


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> Path:
    return nudged_artefact(tmp_path_factory.mktemp("artefact"))


@pytest.fixture(scope="module")
def model(artefact: Path) -> MultimodalLM:
    return inference.load_model(artefact, "cpu")


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_single_audio_prints_the_answer_of_the_default_prompt(artefact, model, capsys) -> None:
    assert infer(artefact, "--audio", MEDIA / "tone.flac") == 0
    printed = capsys.readouterr().out
    wave = decode_audio((MEDIA / "tone.flac").read_bytes(), "tone.flac")
    msgs = [{"role": "user", "content": DEFAULT_PROMPTS["asr"]}]
    want = model.generate(
        [model.prepare("input", msgs, {"audio": [wave]}, add_generation_prompt=True)], max_new_tokens=4
    )
    assert want[0]
    assert printed == want[0] + "\n"


def test_single_image_with_a_prompt_without_placeholder(artefact, capsys) -> None:
    assert infer(artefact, "--image", MEDIA / "red.png", "--prompt", "What colour is it?") == 0
    printed = capsys.readouterr().out
    assert isinstance(printed, str)
    assert printed.strip()
    assert printed.count("\n") >= 1


def test_single_missing_file_is_an_error_exit(artefact, capsys) -> None:
    assert infer(artefact, "--audio", MEDIA / "nope.flac") == 1
    err = capsys.readouterr().err
    assert "missing_file" in err
    assert "nope.flac" in err


def test_single_and_batch_arguments_do_not_mix(artefact, tmp_path) -> None:
    with pytest.raises(ValueError, match="batch mode"):
        infer(
            artefact, "--audio", MEDIA / "tone.flac", "--input", SHARDS / "shard-000000.tar", "--output", tmp_path / "o"
        )
    with pytest.raises(ValueError, match="--output needs --input"):
        infer(artefact, "--output", tmp_path / "o.jsonl")


def write_manifest(folder: Path) -> Path:
    shutil.copy(MEDIA / "tone.flac", folder / "tone.flac")
    shutil.copy(MEDIA / "red.png", folder / "red.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    chat = [
        {"role": "user", "content": "<image> What colour is it?"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And the shape?"},
        {"role": "assistant", "content": "a square"},
    ]
    lines = [
        {"key": "tone", "audio": "tone.flac", "response": "1 2 3", "task": "asr", "lang": "en"},
        {"key": "missing", "audio": "nope.flac", "response": "4 5", "task": "asr", "lang": "en"},
        {"key": "chat", "image": "red.png", "messages": chat, "lang": "en"},
        {"key": "corrupt", "image": "broken.png", "prompt": "<image> Describe it."},
        {
            "key": "several",
            "audio": ["tone.flac", "tone.flac"],
            "image": "red.png",
            "messages": [{"role": "user", "content": "<audio> <audio> <image> Same sound twice?"}],
        },
        {"key": "text", "prompt": "Say hello."},
    ]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_manifest_with_a_missing_file_and_a_corrupt_image(artefact, tmp_path) -> None:
    out = tmp_path / "out" / "pred.jsonl"
    assert infer(artefact, "--input", write_manifest(tmp_path), "--output", out, "--batch-size", "4") == 0
    lines = read_lines(out)
    assert [line["key"] for line in lines] == ["tone", "missing", "chat", "corrupt", "several", "text"]
    assert ["output" in line for line in lines] == [True, False, True, False, True, True]
    assert set(lines[1]) == {"key", "error", "lang", "task"}  # what the manifest line said is kept
    assert "missing_file" in lines[1]["error"]
    assert "nope.flac" in lines[1]["error"]
    assert "corrupt_image" in lines[3]["error"]
    assert "broken.png" in lines[3]["error"]
    assert lines[0] | {"output": None} == {
        "key": "tone",
        "output": None,
        "reference": "1 2 3",
        "lang": "en",
        "task": "asr",
    }
    assert lines[2]["reference"] == "a square"
    assert "reference" not in lines[5]
    assert not out.with_name("pred.jsonl.partial").exists()


def test_batched_answers_equal_one_by_one(model, tmp_path) -> None:
    requests = list(inference.open_requests(write_manifest(tmp_path)))
    options = GenerationOptions(max_new_tokens=4)
    batched = list(InferenceRunner(model, 6, options).predict(requests))
    single = list(InferenceRunner(model, 1, options).predict(requests))
    assert batched == single
    assert sum(p.ok for p in batched) == 4


def test_folder_mode_one_line_per_media_file(artefact, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(MEDIA / "tone.flac", folder / "my clip.flac")
    shutil.copy(MEDIA / "red.png", folder / "red.png")
    shutil.copy(MEDIA / "tone.flac", folder / "red.flac")
    (folder / "notes.txt").write_text("not media")
    out = tmp_path / "pred.jsonl"
    assert infer(artefact, "--input", folder, "--output", out) == 0
    lines = read_lines(out)
    assert [line["key"] for line in lines] == ["my_clip", "red", "red-2"]  # sorted by file name: .flac < .png
    assert all(line["output"] for line in lines)


def test_shard_mode_one_line_per_sample_in_order(artefact, tmp_path) -> None:
    out = tmp_path / "pred.jsonl"
    assert infer(artefact, "--input", SHARDS / "shard-{000000..000001}.tar", "--output", out, "--batch-size", "6") == 0
    want = []
    for shard in sorted(SHARDS.glob("*.tar")):
        with tarfile.open(shard) as tar:
            want += [m.name[: -len(".json")] for m in tar.getmembers() if m.name.endswith(".json")]
    lines = read_lines(out)
    assert [line["key"] for line in lines] == want
    assert len(want) == 11
    assert all("output" in line and line["reference"] for line in lines)
    assert {line["lang"] for line in lines} == {"en", "de"}


@pytest.mark.parametrize("through_a_pipe", [False, True])
def test_truncated_shard_reports_an_error_line_and_keeps_the_rest(tmp_path, through_a_pipe) -> None:
    data = (SHARDS / "shard-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    requests = list(inference.open_requests(f"pipe:cat {cut}" if through_a_pipe else str(cut)))
    good = [r for r in requests if r.error is None]
    bad = [r for r in requests if r.error is not None]
    assert good
    assert good[0].key == "tone-en-0"
    assert len(bad) == 1
    assert "truncated_tar" in bad[0].error


def test_a_batch_whose_generation_raises_still_answers_the_other_items(model, monkeypatch) -> None:
    requests = [file_request(k, {"audio": [MEDIA / "tone.flac"]}) for k in ("a", "b", "bad", "c")]
    options = GenerationOptions(max_new_tokens=4)
    want = [p.output for p in InferenceRunner(model, 4, options).predict(requests)]
    original = MultimodalLM.generate
    calls = []

    def generate(self, samples, **kwargs):
        calls.append([s.key for s in samples])
        if any(s.key == "bad" for s in samples):
            raise RuntimeError("boom")
        return original(self, samples, **kwargs)

    monkeypatch.setattr(MultimodalLM, "generate", generate)
    got = list(InferenceRunner(model, 4, options).predict(requests))
    assert [p.key for p in got] == ["a", "b", "bad", "c"]
    assert [p.ok for p in got] == [True, True, False, True]
    assert got[2].error == "RuntimeError: boom"
    assert [p.output for p in got if p.ok] == [w for w, k in zip(want, "ab_c", strict=True) if k != "_"]
    assert calls == [["a", "b", "bad", "c"], ["a"], ["b"], ["bad"], ["c"]]


def test_an_item_of_a_modality_the_model_lacks_fails_alone(tmp_path) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    del model.encoders["image"]
    requests = [
        file_request("img", {"image": [MEDIA / "red.png"]}),
        file_request("snd", {"audio": [MEDIA / "tone.flac"]}),
    ]
    got = InferenceRunner(model, 2, GenerationOptions(max_new_tokens=2)).predict_batch(requests)
    assert [p.ok for p in got] == [False, True]
    assert "no image encoder" in got[0].error


def test_generation_options() -> None:
    assert GenerationOptions().generate_kwargs()["do_sample"] is False
    sampled = GenerationOptions(temperature=0.7, top_p=0.9).generate_kwargs()
    assert sampled["do_sample"] is True
    assert (sampled["temperature"], sampled["top_p"]) == (0.7, 0.9)
    with pytest.raises(ValueError, match="top_p") as e:
        GenerationOptions(top_p=0, max_new_tokens=0)
    assert "max_new_tokens" in str(e.value)


def test_sampling_with_a_seed_is_reproducible(artefact, tmp_path) -> None:
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        argv = [
            "--input",
            SHARDS / "shard-000000.tar",
            "--output",
            tmp_path / name,
            "--temperature",
            "1",
            "--seed",
            "3",
        ]
        assert infer(artefact, *argv) == 0
        outs.append([line["output"] for line in read_lines(tmp_path / name)])
    assert outs[0] == outs[1]


def test_seeded_sampling_leaves_the_callers_rng_alone(model) -> None:
    requests = [file_request(k, {"audio": [MEDIA / "tone.flac"]}) for k in ("a", "b", "c")]
    runner = InferenceRunner(model, 2, GenerationOptions(max_new_tokens=4, temperature=1.0, seed=5))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [p.output for p in runner.predict(requests)]
    assert torch.equal(torch.get_rng_state(), state)
    assert [p.output for p in runner.predict(requests)] == first


def test_text_only_prompt_and_no_input(artefact, capsys) -> None:
    assert infer(artefact, "--prompt", "Say hello.") == 0
    assert capsys.readouterr().out.endswith("\n")
    with pytest.raises(ValueError, match="give --audio"):
        infer(artefact)


@pytest.mark.parametrize("through_a_pipe", [False, True])
def test_the_sample_a_cut_falls_in_fails_as_truncated_tar(tmp_path, through_a_pipe) -> None:
    tar_cut_in_last_sample(tmp_path / "cut.tar")
    url = f"pipe:cat {tmp_path / 'cut.tar'}" if through_a_pipe else str(tmp_path / "cut.tar")
    requests = list(inference.open_requests(url))
    assert [r.key for r in requests if r.error is None] == ["s0", "s1"]
    failed = {r.key: r.error for r in requests if r.error is not None}
    assert set(failed) == {None, "s2"}  # the shard's cut, and the sample it cut
    assert "truncated_tar" in failed[None]
    assert failed["s2"].startswith("sample 's2'") and "truncated_tar: the last sample before the cut" in failed["s2"]


@pytest.mark.parametrize("through_a_pipe", [False, True])
def test_the_first_items_of_a_cut_shard_report_its_cut_where_the_reader_met_it(tmp_path, through_a_pipe) -> None:
    tar_cut_in_last_sample(tmp_path / "cut.tar")
    url = f"pipe:cat {tmp_path / 'cut.tar'}" if through_a_pipe else str(tmp_path / "cut.tar")
    got = [(r.key, r.error is None) for r in first_requests(inference.open_requests(url), 2)]
    # a local shard's cut is found before reading (its tail); a pipe's only past the second sample
    assert got == ([("s0", True), ("s1", True)] if through_a_pipe else [(None, False), ("s0", True), ("s1", True)])
