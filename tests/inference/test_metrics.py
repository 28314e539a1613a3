"""Text metrics: normalisers, corpus-level WER/CER, CER for zh, BLEU/chrF as sacrebleu, exact-match accuracy."""

from __future__ import annotations

import jiwer
import pytest
import sacrebleu

from mmadapter.languages import base_language, language_tag
from mmadapter.metrics import accuracy, corpus_score, error_rate, metric_for


def test_the_normaliser_is_applied() -> None:
    assert error_rate(["Hello, World!"], ["hello world"], "en") == 0
    assert error_rate(["Hello, World!"], ["hello world"], "de") == 0
    assert jiwer.wer("Hello, World!", "hello world") == 1  # what it would be without


def test_english_uses_the_english_normaliser_and_others_the_basic_one() -> None:
    assert error_rate(["the colour of Mr. Smith"], ["the color of mister smith"], "en") == 0
    assert error_rate(["the colour"], ["the color"], "de") == 0.5
    assert error_rate(["the colour"], ["the color"], "en-GB") == 0


def test_wer_is_total_edits_over_total_reference_words() -> None:
    refs, hyps = ["a b c d", "e"], ["a b c d", "x y"]
    assert error_rate(refs, hyps, "en") == pytest.approx(2 / 5)  # not the mean of 0 and 2
    assert error_rate(refs, hyps, "en") == jiwer.wer(refs, hyps)


def test_cer_for_chinese_ignores_whitespace_and_punctuation() -> None:
    assert metric_for("wer", "zh-CN") == "cer"
    assert metric_for("wer", "en") == "wer"
    assert metric_for("bleu", "zh") == "bleu"
    assert corpus_score("wer", ["你好，世界"], ["你好 世间"], "zh") == pytest.approx(0.25)
    assert corpus_score("cer", ["你好，世界"], ["你好 世间"], "zh") == pytest.approx(0.25)


def test_a_mixed_corpus_counts_characters_for_chinese_and_words_for_english() -> None:
    refs, hyps, langs = ["你好世界", "the cat sat"], ["你好世间", "the cat"], ["zh", "en"]
    assert corpus_score("wer", refs, hyps, langs) == pytest.approx((1 + 1) / (4 + 3))


def test_explicit_cer_counts_spaces_in_spaced_languages() -> None:
    assert error_rate(["ab cd"], ["abcd"], "en", "char") == pytest.approx(jiwer.cer(["ab cd"], ["abcd"]))
    assert error_rate(["ab cd"], ["abcd"], "en", "char") == pytest.approx(0.2)


def test_bleu_and_chrf_equal_sacrebleu() -> None:
    refs = ["the cat sat on the mat", "a red square", "it is raining today"]
    hyps = ["the cat sat on a mat", "a red square", "it rains today"]
    assert corpus_score("bleu", refs, hyps) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert corpus_score("chrf", refs, hyps) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < corpus_score("bleu", refs, hyps) < 100
    zh = sacrebleu.corpus_bleu(["今天下雨了"], [["今天在下雨"]], tokenize="zh").score
    assert corpus_score("bleu", ["今天在下雨"], ["今天下雨了"], "zh") == pytest.approx(zh)


def test_accuracy_normalises_case_and_whitespace_only() -> None:
    refs = ["Paris", "a  red square", "blue", "yes."]
    hyps = [" paris", "A red\tsquare", "green", "yes"]
    assert accuracy(refs, hyps) == 0.5
    assert corpus_score("accuracy", refs, hyps) == 0.5


def test_bad_calls_raise() -> None:
    with pytest.raises(ValueError, match="unknown metric 'ter'"):
        corpus_score("ter", ["a"], ["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_score("wer", ["a", "b"], ["a"])
    assert corpus_score("wer", [], []) == 0


def test_base_language() -> None:
    assert [base_language(x) for x in ("zh-CN", "en_US", "DE", "", None)] == ["zh", "en", "de", None, None]


def test_language_tag_writes_each_subtag_in_its_usual_case() -> None:
    tags = ("ZH-cn", "en_us", "zh-hant-tw", "ES-419", " de ", "sr-LATN", "", "  ", None)
    want = ["zh-CN", "en-US", "zh-Hant-TW", "es-419", "de", "sr-Latn", None, None, None]
    assert [language_tag(x) for x in tags] == want
