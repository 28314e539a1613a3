"""``mmadapter eval``: the report equals jiwer on the predictions file, overall and per language and task."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import jiwer
import pytest
from conftest import ROOT, nudged_artefact, tiny_recipe
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from mmadapter import evaluate as evaluation
from mmadapter.cli import main
from mmadapter.evaluate import evaluate, read_predictions, score_predictions
from mmadapter.limits import MediaLimits
from mmadapter.model import MultimodalLM

SHARDS = ROOT / "tests" / "assets" / "shards"
MEDIA = ROOT / "tests" / "assets" / "media"


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> Path:
    return nudged_artefact(tmp_path_factory.mktemp("artefact"), seed=1)


def run_eval(artefact: Path, *argv: str | Path) -> int:
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(artefact), "--max-new-tokens", "6", *map(str, argv)])
    return evaluation.run(args)


def normalised_wer(lines: list[dict]) -> float:
    english, basic = EnglishTextNormalizer(), BasicTextNormalizer()

    def norm(text: str, lang: str) -> str:
        return " ".join((english if lang == "en" else basic)(text).split())

    refs = [norm(line["reference"], line["lang"]) for line in lines]
    hyps = [norm(line["output"], line["lang"]) for line in lines]
    return jiwer.wer(refs, hyps)


def test_eval_on_two_language_shards_equals_jiwer_on_the_predictions_file(artefact, tmp_path, capsys) -> None:
    report_path = tmp_path / "report.json"
    argv = ["--input", SHARDS / "shard-{000000..000001}.tar", "--task", "asr", "--output", report_path]
    assert run_eval(artefact, *argv, "--temperature", "1", "--seed", "0") == 0
    report = json.loads(report_path.read_text())
    lines = read_predictions(tmp_path / "report.predictions.jsonl")
    assert len(lines) == report["n"] == 6
    assert {line["lang"] for line in lines} == {"en", "de"}
    assert any(line["output"].strip() for line in lines)
    assert report["metric"] == "wer"
    assert report["errors"] == 0
    assert report["overall"] == pytest.approx(normalised_wer(lines), abs=1e-12)
    assert set(report["by_lang"]) == {"en", "de"}
    for lang in ("en", "de"):
        group = [line for line in lines if line["lang"] == lang]
        assert report["by_lang"][lang]["score"] == pytest.approx(normalised_wer(group), abs=1e-12)
        assert report["by_lang"][lang]["n"] == len(group)
    assert report["by_task"]["asr"]["score"] == report["overall"]
    table = capsys.readouterr().out
    assert "de" in table and "en" in table and f"{report['overall']:.4f}" in table


HYPOTHESES = {
    "en-0": ("The colour of the cat.", "the color of the cat", "en"),  # 0 errors after normalisation
    "en-1": ("Hello, world!", "hello", "en"),  # 1 deletion / 2
    "de-0": ("Guten Morgen", "guten abend", "de"),  # 1 substitution / 2
    "de-1": ("Hallo Welt", "hallo welt", "de"),  # 0 / 2
    "zh-0": ("你好，世界", "你好世间", "zh"),  # 1 / 4 characters
}


@pytest.fixture
def known_answers(tmp_path: Path, monkeypatch) -> Path:
    """A manifest with references in three languages, and a model that answers each key as listed above."""
    shutil.copy(MEDIA / "tone.flac", tmp_path / "tone.flac")
    lines = [
        {"key": key, "audio": "tone.flac", "response": ref, "lang": lang, "task": "asr" if lang != "zh" else "ast"}
        for key, (ref, _, lang) in HYPOTHESES.items()
    ]
    lines.insert(2, {"key": "gone", "audio": "missing.flac", "response": "x", "lang": "en", "task": "asr"})
    lines.append({"key": "open", "audio": "tone.flac", "prompt": "<audio> Anything?", "lang": "en"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    def generate(self, samples, **kwargs):
        return [HYPOTHESES.get(s.key, ("", "whatever", ""))[1] for s in samples]

    monkeypatch.setattr(MultimodalLM, "generate", generate)
    return tmp_path / "m.jsonl"


def test_eval_scores_known_answers_per_language_and_task(known_answers) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    model.train()
    report = evaluate(model, known_answers, "wer", batch_size=3)
    assert model.training  # the trainer's mode is restored
    assert (report["n"], report["errors"], report["unscored"]) == (5, 1, 1)
    assert report["by_lang"]["en"] == {"metric": "wer", "score": pytest.approx(1 / 7), "n": 2}
    assert report["by_lang"]["de"] == {"metric": "wer", "score": pytest.approx(1 / 4), "n": 2}
    assert report["by_lang"]["zh"] == {"metric": "cer", "score": pytest.approx(1 / 4), "n": 1}
    assert report["overall"] == pytest.approx(3 / (7 + 4 + 4))
    assert report["by_task"]["asr"]["score"] == pytest.approx(2 / 11)
    assert report["by_task"]["ast"]["metric"] == "cer"


def test_eval_accuracy_and_task_filter(known_answers, tmp_path) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    report = evaluate(model, known_answers, "accuracy", tasks=["ast"], predictions=tmp_path / "p.jsonl")
    assert (report["n"], report["errors"], report["overall"]) == (1, 0, 0.0)
    assert [line["key"] for line in read_predictions(tmp_path / "p.jsonl")] == ["zh-0"]
    report = evaluate(model, known_answers, "accuracy", tasks=["asr"])
    assert (report["n"], report["errors"], report["overall"]) == (4, 1, 0.25)


def test_eval_of_the_first_samples_only(known_answers, artefact, capsys) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    report = evaluate(model, known_answers, "wer", max_samples=3)  # en-0, en-1 and the missing file
    assert (report["n"], report["errors"], set(report["by_lang"])) == (2, 1, {"en"})
    report = evaluate(model, known_answers, "wer", tasks=["asr"], max_samples=4)  # of asr: de-0 is the fourth
    assert (report["n"], report["errors"], report["by_lang"]["de"]["n"]) == (3, 1, 1)
    assert run_eval(artefact, "--input", SHARDS / "shard-{000000..000001}.tar", "--max-samples", "7") == 0
    assert "over 7 item(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_eval(artefact, "--input", SHARDS / "shard-000000.tar", "--max-samples", "0")
    assert "--max-samples: must be above 0" in capsys.readouterr().err


def test_score_predictions_counts_and_missing_languages() -> None:
    lines = [
        {"key": "a", "output": "hello world", "reference": "Hello, world"},
        {"key": "b", "error": "sample 'b': corrupt_audio: ..."},
        {"key": "c", "output": "no reference"},
    ]
    report = score_predictions(lines, "wer", default_lang="en")
    assert (report["overall"], report["n"], report["errors"], report["unscored"]) == (0.0, 1, 1, 1)
    assert set(report["by_lang"]) == {"en"}
    assert set(report["by_task"]) == {"unknown"}
    assert score_predictions(lines[1:], "bleu")["overall"] is None
    with pytest.raises(ValueError, match="unknown metric"):
        score_predictions(lines, "ter")


def test_eval_reads_within_the_limits_it_is_given(known_answers, artefact, capsys) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    report = evaluate(model, known_answers, "wer", limits=MediaLimits(max_audio_seconds=0.1))  # tone.flac: 0.4 s
    assert (report["n"], report["errors"], report["overall"]) == (0, 7, None)
    assert run_eval(artefact, "--input", SHARDS / "shard-000000.tar", "--max-audio-seconds", "0.1") == 1
    assert "over 0 item(s); 6 error(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_eval(artefact, "--input", SHARDS / "shard-000000.tar", "--max-audio-seconds", "0")
    assert "--max-audio-seconds: must be above 0" in capsys.readouterr().err


def test_rescore_scores_a_written_predictions_file_again_without_a_model(known_answers, tmp_path, capsys) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    first = evaluate(model, known_answers, "wer", predictions=tmp_path / "p.jsonl")
    gone = next(line for line in read_predictions(tmp_path / "p.jsonl") if line["key"] == "gone")
    assert (gone["lang"], gone["task"]) == ("en", "asr")  # an error line keeps what the input said
    assert evaluation.rescore(tmp_path / "p.jsonl", "wer") == first
    for metric, tasks, limit in (("accuracy", ["asr"], None), ("chrf", None, 3), ("cer", ["ast"], None)):
        again = evaluation.rescore(tmp_path / "p.jsonl", metric, tasks=tasks, max_samples=limit)
        direct = evaluate(model, known_answers, metric, tasks=tasks, max_samples=limit)
        assert {k: v for k, v in again.items() if k != "predictions"} == direct
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    report_path = tmp_path / "chrf.json"
    args = parser.parse_args(["--rescore", str(tmp_path / "p.jsonl"), "--metric", "chrf", "--output", str(report_path)])
    assert evaluation.run(args) == 0
    assert json.loads(report_path.read_text())["overall"] == evaluation.rescore(tmp_path / "p.jsonl", "chrf")["overall"]
    assert "chrf" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"key": "a", "output": "x"}\n{"key": "b", "output": \n', r"p\.jsonl:2: not JSON"),
        ('["a", "x"]\n', r"p\.jsonl:1: not a prediction line: a JSON list"),
        ('{"key": "a"}\n', "neither a string 'output' nor a string 'error'"),
        ('{"key": null, "output": "x"}\n', "only an error line may have a null key"),
        ('{"key": "a", "output": "x", "reference": 3}\n', "'reference' is a int"),
    ],
)
def test_rescore_refuses_a_line_that_is_not_a_prediction_naming_it(tmp_path, text: str, message: str) -> None:
    (tmp_path / "p.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        evaluation.rescore(tmp_path / "p.jsonl", "wer")


def test_rescore_counts_an_error_of_no_item_and_takes_no_model_arguments(tmp_path, capsys) -> None:
    lines = [
        {"key": None, "error": "a.tar: truncated_tar: ..."},
        {"key": "a", "output": "x", "reference": "x"},
        {"key": "b", "output": "y", "reference": "x"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = evaluation.rescore(tmp_path / "p.jsonl", "accuracy", max_samples=1)
    assert (report["n"], report["errors"], report["overall"]) == (1, 1, 1.0)
    assert main(["eval", "--rescore", str(tmp_path / "p.jsonl"), "--checkpoint", str(tmp_path)]) == 2
    assert "drop --checkpoint" in capsys.readouterr().err
    assert main(["eval", "--input", str(tmp_path / "p.jsonl")]) == 2
    assert "give --checkpoint and --input, or --rescore" in capsys.readouterr().err
    assert main(["eval", "--rescore", str(tmp_path / "p.jsonl"), "--output", str(tmp_path / "p.jsonl")]) == 2
    assert "is also an input" in capsys.readouterr().err


def test_languages_group_by_their_tag_in_its_usual_case() -> None:
    lines = [
        {"key": "a", "output": "你好", "reference": "你好", "lang": "ZH-cn"},
        {"key": "b", "output": "你", "reference": "你好", "lang": "zh-CN"},
        {"key": "c", "output": "你好", "reference": "你好", "lang": "zh"},
        {"key": "d", "output": "hi", "reference": "hi", "lang": "en_us"},
    ]
    report = score_predictions(lines, "wer")
    assert set(report["by_lang"]) == {"zh-CN", "zh", "en-US"}
    assert report["by_lang"]["zh-CN"] == {"metric": "cer", "score": pytest.approx(1 / 4), "n": 2}
