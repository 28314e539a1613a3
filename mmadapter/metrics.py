"""Corpus-level text metrics: WER/CER (jiwer, Whisper normalisers), BLEU/chrF (sacrebleu), exact-match accuracy.

Every metric is computed over a whole list of (reference, hypothesis) pairs, never averaged over sentences:
WER is the total word edits (substitutions + deletions + insertions) divided by the total reference words,
as ``jiwer.wer`` computes over lists; BLEU and chrF are sacrebleu's corpus scores.

Normalisation before WER/CER (Whisper's, from the ``whisper-normalizer`` package): ``EnglishTextNormalizer``
for ``en`` (case, punctuation, spelling variants, numbers), ``BasicTextNormalizer`` for every other or an
unknown language (case, punctuation, symbols). Languages written without spaces between words
(:data:`CER_LANGUAGES`) are scored by characters even when WER is asked for: their normalised text loses
all whitespace (which the normaliser inserts where punctuation was) and each character counts as a word,
so their share of a mixed-language WER is a character error count. BLEU and chrF take raw text (sacrebleu
tokenises itself; ``zh`` uses its Chinese tokeniser, ``ja``/``th`` its character tokeniser when a whole
group is in that language). Accuracy compares texts after case folding and whitespace collapsing only.

Scales: WER, CER and accuracy are fractions (WER may exceed 1 with insertions); BLEU and chrF are 0–100.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Literal, get_args

import jiwer
import sacrebleu

from mmadapter.languages import base_language

__all__ = [
    "CER_LANGUAGES",
    "METRICS",
    "Metric",
    "accuracy",
    "bleu",
    "chrf",
    "corpus_score",
    "error_rate",
    "metric_for",
    "normalise_for_error_rate",
    "text_normaliser",
]

Metric = Literal["wer", "cer", "bleu", "chrf", "accuracy"]
METRICS: tuple[Metric, ...] = get_args(Metric)
# Written without spaces between words: scored by characters (Whisper's paper does the same).
CER_LANGUAGES: frozenset[str] = frozenset({"zh", "ja", "th"})
_SPACES = re.compile(r"\s+")
# sacrebleu tokenisers for languages its default 13a tokeniser cannot split.
_BLEU_TOKENIZERS = {"zh": "zh", "ja": "char", "th": "char"}


def text_normaliser(lang: str | None) -> Callable[[str], str]:
    """Whisper's English normaliser for ``en``, its basic normaliser for any other (or no) language."""
    return _normaliser(english=base_language(lang) == "en")


@cache
def _normaliser(english: bool) -> Callable[[str], str]:
    # Imported here: the English normaliser reads its spelling table on construction.
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def metric_for(metric: Metric, lang: str | None) -> Metric:
    """The metric a sample is actually scored with: ``cer`` instead of ``wer`` for :data:`CER_LANGUAGES`."""
    return "cer" if metric == "wer" and base_language(lang) in CER_LANGUAGES else metric


def normalise_for_error_rate(text: str, lang: str | None, unit: Literal["word", "char"]) -> str:
    """Text as WER (``unit="word"``) or CER (``unit="char"``) compares it.

    Whisper's normaliser for ``lang``, then whitespace collapsed. For :data:`CER_LANGUAGES` all whitespace
    is removed; with ``unit="word"`` their characters are then joined by spaces, so that a word error rate
    over them is their character error rate.
    """
    text = _SPACES.sub(" ", text_normaliser(lang)(text)).strip()
    if base_language(lang) in CER_LANGUAGES:
        text = _SPACES.sub("", text)
        return " ".join(text) if unit == "word" else text
    return text


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def _langs(langs: Sequence[str | None] | str | None, n: int) -> list[str | None]:
    if langs is None or isinstance(langs, str):
        return [langs] * n
    if len(langs) != n:
        raise ValueError(f"{len(langs)} languages for {n} pairs")
    return list(langs)


def error_rate(
    references: Sequence[str],
    hypotheses: Sequence[str],
    langs: Sequence[str | None] | str | None = None,
    unit: Literal["word", "char"] = "word",
) -> float:
    """Corpus WER (``unit="word"``) or CER (``unit="char"``) after normalisation, as a fraction.

    Args:
        references: The reference texts.
        hypotheses: The model outputs, one per reference.
        langs: The language of each pair, or one for all (``None``: basic normaliser).
        unit: Words or characters.

    Returns:
        Total edits / total reference words (or characters); 0 for no pairs.
    """
    _check_lengths(references, hypotheses)
    if not references:
        return 0.0
    per = _langs(langs, len(references))
    refs = [normalise_for_error_rate(r, lang, unit) for r, lang in zip(references, per, strict=True)]
    hyps = [normalise_for_error_rate(h, lang, unit) for h, lang in zip(hypotheses, per, strict=True)]
    score = jiwer.wer(refs, hyps) if unit == "word" else jiwer.cer(refs, hyps)
    return float(score)


def _bleu_tokenizer(langs: Sequence[str | None]) -> str:
    bases = {base_language(lang) for lang in langs}
    only = bases.pop() if len(bases) == 1 else None
    return _BLEU_TOKENIZERS.get(only or "", "13a")


def bleu(
    references: Sequence[str], hypotheses: Sequence[str], langs: Sequence[str | None] | str | None = None
) -> float:
    """sacrebleu's corpus BLEU (0–100) with one reference per hypothesis."""
    _check_lengths(references, hypotheses)
    if not references:
        return 0.0
    tokenize = _bleu_tokenizer(_langs(langs, len(references)))
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


def chrf(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """sacrebleu's corpus chrF (0–100) with one reference per hypothesis."""
    _check_lengths(references, hypotheses)
    if not references:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def _exact(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def accuracy(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference after case folding and whitespace collapsing."""
    _check_lengths(references, hypotheses)
    if not references:
        return 0.0
    return sum(_exact(r) == _exact(h) for r, h in zip(references, hypotheses, strict=True)) / len(references)


def corpus_score(
    metric: Metric,
    references: Sequence[str],
    hypotheses: Sequence[str],
    langs: Sequence[str | None] | str | None = None,
) -> float:
    """One corpus-level score of ``metric`` over all pairs (see the module docstring for each metric).

    Raises:
        ValueError: an unknown metric, or lists of different lengths.
    """
    if metric == "wer":
        return error_rate(references, hypotheses, langs, "word")
    if metric == "cer":
        return error_rate(references, hypotheses, langs, "char")
    if metric == "bleu":
        return bleu(references, hypotheses, langs)
    if metric == "chrf":
        return chrf(references, hypotheses)
    if metric == "accuracy":
        return accuracy(references, hypotheses)
    raise ValueError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
