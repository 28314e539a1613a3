"""Synthetic multilingual data for the offline demo: spoken digit strings and images of coloured shapes.

Speech: strings of 3–6 digits (``"3 7 1 9"``) spoken by espeak-ng in English, German, Spanish, French and
Italian, read at a steady pace, as a number is read out for dictation: one digit every
:data:`SLOT_S` seconds, each clip :data:`SLOTS` slots long (trailing slots silent). espeak-ng reads digits
separated by spaces one by one, as words of the voice's language (``drei sieben eins neun``), with long
pauses between them; the words are cut at those pauses and each placed at the start of its slot (with a
few milliseconds of jitter). Voices, voice variants (``en+m3``, ``de+f2``), speed and pitch vary per
utterance, and a little noise is added. The audio is resampled from espeak's 22.05 kHz to 16 kHz mono and
stored as FLAC. The target text is the digits themselves. espeak-ng is the system program or the one the
``espeakng-loader`` wheel bundles (:mod:`mmadapter.data.espeak`).

Images: one or two coloured shapes with their caption (:mod:`mmadapter.data.synthetic_images`); instruction
sets ask about the same files in other words (:mod:`mmadapter.data.synthetic_instruct`).

Everything is planned from one seed before any file is written, and every file depends only on its own plan
entry, so the output is the same whatever the number of workers. Layout of ``out_dir``::

    audio/<lang>/<key>.flac, images/<key>.png
    <set>_<split>.jsonl                        one manifest per set and split (sets: speech_<lang>, images)
    shards/<set>/<split>/shard-000000.tar      written by ``shard`` (``mmadapter shard``'s writer), with stats.json

Manifest lines use the short form (``task`` asr / caption, whose default prompts the pipeline adds), ``lang``
and free metadata: ``voice``, ``speed``, ``pitch`` for speech; ``objects`` (left to right) for images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from mmadapter.data.espeak import Speaker
from mmadapter.data.speech_signal import resample_fft, word_spans
from mmadapter.data.synthetic_images import (
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    ImagePlan,
    ShapeItem,
    caption,
    plan_images,
    render_image,
    shape_mask,
    write_image,
)
from mmadapter.data.synthetic_instruct import instruct_lines

__all__ = [
    "COLOURS",
    "DIGIT_WORDS",
    "IMAGE_SIZE",
    "LANGUAGES",
    "SHAPES",
    "DataSizes",
    "ImagePlan",
    "ShapeItem",
    "Sharder",
    "SyntheticData",
    "Utterance",
    "caption",
    "paced",
    "plan_images",
    "plan_speech",
    "render_image",
    "resample_fft",
    "shape_mask",
    "synthesize_data",
    "synthesize_utterance",
    "word_spans",
    "write_one_shard",
]

SAMPLE_RATE = 16_000
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "fr", "it")
# How espeak-ng reads each digit (checked with `espeak-ng -q -x -v <lang> "0 1 2 …"`); used for texts the LLM
# learns from, never to synthesise (espeak reads the digits itself).
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
}
# espeak-ng voices per language (regional accents), combined with VARIANTS (``en+m3``).
VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en", "en-us"),
    "de": ("de",),
    "es": ("es", "es-419"),
    "fr": ("fr", "fr-be"),
    "it": ("it",),
}
VARIANTS: tuple[str, ...] = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "Andy",
    "Annie",
    "edward",
    "john",
    "max",
    "paul",
    "robert",
    "steph",
)
SPEED_WPM = (150, 210)  # espeak-ng -s
PITCH = (25, 75)  # espeak-ng -p (0–99)
SPEECH_GAP = 60  # espeak-ng -g between the digits (units of 10 ms), cut at afterwards
DIGITS = (3, 6)
SLOTS = DIGITS[1]  # every clip has room for the longest digit string
SLOT_S = 0.8  # seconds per digit; the longest word (Italian "quattro" at 150 wpm) takes about 0.6 s
ONSET_JITTER_S = (0.0, 0.05)  # where a word starts within its slot


# --- speech -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: what espeak-ng says, in which voice, and its noise seed."""

    key: str
    lang: str
    digits: tuple[int, ...]
    voice: str
    speed: int
    pitch: int
    onset_jitter: tuple[float, ...]
    noise_seed: int

    @property
    def text(self) -> str:
        """The target text and what espeak-ng is given: digits separated by spaces."""
        return " ".join(map(str, self.digits))


def plan_speech(lang: str, count: int, seed: int) -> list[Utterance]:
    """``count`` utterances of ``lang``, drawn from a generator seeded by ``(seed, lang)``.

    Raises:
        ValueError: an unknown language.
    """
    if lang not in VOICES:
        raise ValueError(f"no espeak-ng voices for language {lang!r}; available: {', '.join(VOICES)}")
    rng = np.random.default_rng([seed, LANGUAGES.index(lang) if lang in LANGUAGES else len(LANGUAGES)])
    out = []
    for i in range(count):
        n = int(rng.integers(DIGITS[0], DIGITS[1] + 1))
        voice = f"{rng.choice(VOICES[lang])}+{rng.choice(VARIANTS)}"
        out.append(
            Utterance(
                key=f"{lang}-{i:05d}",
                lang=lang,
                digits=tuple(int(d) for d in rng.integers(0, 10, n)),
                voice=voice,
                speed=int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
                pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
                onset_jitter=tuple(round(float(x), 3) for x in rng.uniform(*ONSET_JITTER_S, n)),
                noise_seed=int(rng.integers(2**31)),
            )
        )
    return out


def paced(words: Sequence[np.ndarray], onsets: Sequence[float], rate: int = SAMPLE_RATE) -> np.ndarray:
    """Place word ``j`` at ``j * SLOT_S + onsets[j]`` seconds in a clip of ``SLOTS`` slots (cut, with a 10 ms
    fade, where a word would run into the next slot)."""
    slot = round(SLOT_S * rate)
    out = np.zeros(SLOTS * slot, dtype=np.float32)
    fade = rate // 100
    for j, (word, onset) in enumerate(zip(words, onsets, strict=True)):
        start = j * slot + round(onset * rate)
        word = word[: (j + 1) * slot - start].copy()
        if word.size > fade:
            word[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        out[start : start + word.size] = word
    return out


def synthesize_utterance(utt: Utterance, path: Path | str, speaker: Speaker | None = None) -> float:
    """Speak ``utt`` with espeak-ng at a steady pace and write it to ``path`` as 16 kHz mono FLAC; returns its
    duration in s (always ``SLOTS * SLOT_S``).

    Args:
        speaker: Runs espeak-ng (default: a :class:`~mmadapter.data.espeak.Speaker` for this utterance alone).

    Raises:
        EspeakMissing: espeak-ng is not installed.
        RuntimeError: espeak-ng failed, produced no audio, or its words could not be told apart (the message
            holds the key and espeak-ng's error).
    """
    if speaker is None:
        with Speaker() as own:
            return synthesize_utterance(utt, path, own)
    try:
        wav = speaker.wav(utt.voice, utt.speed, utt.pitch, SPEECH_GAP, utt.text)
    except RuntimeError as e:
        raise RuntimeError(f"{utt.key}: {e}") from e
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    raw = resample_fft(audio.mean(axis=1), rate, SAMPLE_RATE)
    spans = word_spans(raw, SAMPLE_RATE, len(utt.digits), utt.key)
    wave = paced([raw[a:b] for a, b in spans], utt.onset_jitter)
    rng = np.random.default_rng(utt.noise_seed)
    wave = wave / max(float(np.abs(wave).max()), 1e-6) * rng.uniform(0.3, 0.9)
    wave = wave + rng.normal(0.0, rng.uniform(1e-3, 5e-3), wave.size).astype(np.float32)
    sf.write(str(path), np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return wave.size / SAMPLE_RATE


# --- the data set -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSizes:
    """How many utterances per language and images to make, and how many of each are held out for testing."""

    speech: Mapping[str, int]
    speech_test: Mapping[str, int]
    images: int
    images_test: int
    instruct: tuple[str, ...] = ()
    """Sets (``speech_en``, ``images``) that also get an instruction set ``<name>_instruct`` of the same files
    (:mod:`mmadapter.data.synthetic_instruct`)."""

    def __post_init__(self) -> None:
        for lang, n in self.speech.items():
            if not 0 < self.speech_test.get(lang, 0) < n:
                raise ValueError(f"speech_test[{lang!r}] must be between 1 and speech[{lang!r}] - 1 = {n - 1}")
        if not 0 < self.images_test < self.images:
            raise ValueError(f"images_test must be between 1 and images - 1 = {self.images - 1}")


@dataclass
class SyntheticData:
    """Where the data went: manifests and shard directories by set name (``speech_en``, …, ``images``)."""

    root: Path
    manifests: dict[str, dict[str, Path]] = field(default_factory=dict)  # set → split → manifest
    shards: dict[str, dict[str, Path]] = field(default_factory=dict)  # set → split → shard directory
    seconds: dict[str, float] = field(default_factory=dict)  # set → total audio seconds (speech sets)

    def shard_pattern(self, name: str, split: str) -> str:
        """The shard path(s) of a set and split, for a recipe's ``data.train[].shards``."""
        return str(self.shards[name][split] / "shard-000000.tar")


def _speak(task: tuple[Utterance, str, Speaker]) -> float:
    return synthesize_utterance(*task)


def _draw(task: tuple[ImagePlan, str]) -> None:
    write_image(*task)


def _run_all(jobs: Sequence[tuple[Callable[[Any], Any], Sequence[Any]]], workers: int) -> list[list[Any]]:
    """``[list(map(fn, tasks)) for fn, tasks in jobs]`` on ``workers`` threads.

    Threads, not processes: the work is in the espeak-ng processes the threads start (a new one speaks each
    utterance, which keeps espeak-ng deterministic: its library carries state from one to the next) and in numpy,
    libsndfile and Pillow, which release the GIL. A Python process pool would first spend seconds importing
    torch in every worker (this package's ``__init__`` imports it).
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.map(fn, tasks) for fn, tasks in jobs]
        return [list(results) for results in pending]


def _write_manifest(path: Path, lines: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(path)


Sharder = Callable[[Path, Path], Mapping[str, Any]]
"""Writes one manifest's samples as a single shard into a directory; returns its ``stats.json`` contents."""


def write_one_shard(manifest: Path, shard_dir: Path) -> Mapping[str, Any]:
    """The default :data:`Sharder`: ``mmadapter shard``'s writer in this process, every sample in one shard."""
    from mmadapter.data.writer import write_shards  # imports torch: only when shards are written

    # One process: validating these small files takes less time than starting a pool.
    return write_shards(manifest, shard_dir, max_count=1_000_000, overwrite=True)


def synthesize_data(
    out_dir: Path | str, sizes: DataSizes, seed: int = 0, workers: int = 2, shard: Sharder = write_one_shard
) -> SyntheticData:
    """Synthesise speech and images, write one manifest per set and split, and shard each manifest.

    The first ``speech_test[lang]`` utterances of each language and the first ``images_test`` images form the
    ``test`` split, the rest ``train``. Existing files in ``out_dir`` are overwritten.

    Args:
        out_dir: Where everything goes (created if needed).
        sizes: Counts per language and of images.
        seed: Plans every utterance and image; the same seed gives byte-identical shards.
        workers: Threads that synthesise (each waits for one espeak-ng at a time).
        shard: Turns each manifest into its shard (the demo runs the ``mmadapter shard`` command).

    Raises:
        EspeakMissing: speech is asked for and espeak-ng is not installed.
    """
    root = Path(out_dir)
    data = SyntheticData(root)
    speaker = Speaker() if sizes.speech else None
    sets: dict[str, dict[str, list[dict[str, Any]]]] = {}
    speech_tasks, image_tasks = [], []
    for lang, count in sizes.speech.items():
        (root / "audio" / lang).mkdir(parents=True, exist_ok=True)
        name = f"speech_{lang}"
        sets[name] = {"train": [], "test": []}
        for i, utt in enumerate(plan_speech(lang, count, seed)):
            rel = f"audio/{lang}/{utt.key}.flac"
            speech_tasks.append((utt, str(root / rel), speaker))
            line = {"key": utt.key, "audio": rel, "task": "asr", "lang": lang, "response": utt.text}
            line |= {"voice": utt.voice, "speed": utt.speed, "pitch": utt.pitch}
            sets[name]["test" if i < sizes.speech_test[lang] else "train"].append(line)
    if sizes.images:
        (root / "images").mkdir(parents=True, exist_ok=True)
        sets["images"] = {"train": [], "test": []}
        for i, plan in enumerate(plan_images(sizes.images, seed)):
            rel = f"images/{plan.key}.png"
            image_tasks.append((plan, str(root / rel)))
            objects = [asdict(o) for o in plan.objects]
            line = {"key": plan.key, "image": rel, "task": "caption", "lang": "en", "response": plan.caption}
            sets["images"]["test" if i < sizes.images_test else "train"].append(line | {"objects": objects})

    for name in sizes.instruct:
        if name not in sets:
            raise ValueError(f"instruct names {name!r}, which is not made; sets: {', '.join(sets)}")
        sets[f"{name}_instruct"] = {split: list(instruct_lines(lines, seed)) for split, lines in sets[name].items()}

    try:
        durations, _ = _run_all([(_speak, speech_tasks), (_draw, image_tasks)], workers)
    finally:
        if speaker is not None:
            speaker.close()
    by_key = {utt.key: d for (utt, _, _), d in zip(speech_tasks, durations, strict=True)}

    for name, splits in sets.items():
        data.manifests[name], data.shards[name] = {}, {}
        if name.startswith("speech_") and not name.endswith("_instruct"):
            data.seconds[name] = sum(by_key[line["key"]] for lines in splits.values() for line in lines)
        for split, lines in splits.items():
            manifest = root / f"{name}_{split}.jsonl"
            _write_manifest(manifest, lines)
            shard_dir = root / "shards" / name / split
            stats = shard(manifest, shard_dir)
            if stats["written"] != len(lines) or len(stats["shards"]) != 1:
                raise RuntimeError(f"{manifest}: wrote {stats['written']} of {len(lines)} samples: {stats}")
            data.manifests[name][split], data.shards[name][split] = manifest, shard_dir
    return data
