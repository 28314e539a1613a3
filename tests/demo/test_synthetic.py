"""Synthetic demo data: seeded plans, the caption order rule, espeak-ng speech at 16 kHz, identical shards."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmadapter.data import espeak, synthetic
from mmadapter.data.audio import decode_audio
from mmadapter.data.synthetic import (
    COLOURS,
    LANGUAGES,
    SLOT_S,
    SLOTS,
    DataSizes,
    ShapeItem,
    Utterance,
    caption,
    paced,
    plan_images,
    plan_speech,
    render_image,
    resample_fft,
    synthesize_data,
    synthesize_utterance,
    word_spans,
)

TINY = DataSizes(
    speech={"en": 4, "de": 3}, speech_test={"en": 1, "de": 1}, images=6, images_test=2, instruct=("images",)
)


def images_train(data) -> list[dict]:
    return [json.loads(line) for line in data.manifests["images"]["train"].read_text().splitlines()]


def test_plans_are_deterministic_given_the_seed() -> None:
    assert plan_speech("de", 20, seed=3) == plan_speech("de", 20, seed=3)
    assert plan_speech("de", 20, seed=3) != plan_speech("de", 20, seed=4)
    assert plan_speech("de", 20, seed=3)[:5] == plan_speech("de", 5, seed=3)
    assert plan_images(30, seed=3) == plan_images(30, seed=3)
    assert plan_images(30, seed=3) != plan_images(30, seed=4)


def test_speech_plans_vary_voice_speed_pitch_and_length() -> None:
    for lang in LANGUAGES:
        plan = plan_speech(lang, 200, seed=0)
        assert {u.voice.split("+")[0] for u in plan} == set(synthetic.VOICES[lang])
        assert len({u.voice for u in plan}) > 15
        assert {len(u.digits) for u in plan} == {3, 4, 5, 6}
        assert min(u.speed for u in plan) < 160 < 200 < max(u.speed for u in plan)
        assert len({u.pitch for u in plan}) > 30
        assert all(len(u.onset_jitter) == len(u.digits) for u in plan)
    assert Utterance("k", "en", (3, 7, 1, 9), "en", 170, 50, (0.0,) * 4, 0).text == "3 7 1 9"
    with pytest.raises(ValueError, match="no espeak-ng voices for language 'xx'"):
        plan_speech("xx", 1, seed=0)


def test_captions_name_shapes_left_to_right() -> None:
    right = ShapeItem("square", "blue", x=50, y=10, size=16)
    left = ShapeItem("circle", "red", x=12, y=40, size=20)
    assert caption([right, left]) == "a red circle and a blue square"
    assert caption([left]) == "a red circle"
    for plan in plan_images(300, seed=1):
        assert 1 <= len(plan.objects) <= 2
        assert plan.caption == caption(reversed(plan.objects))
        if len(plan.objects) == 2:
            a, b = plan.objects
            assert a.x < b.x and b.x - a.x >= (a.size + b.size) // 2  # no horizontal overlap: order is clear
            assert plan.caption == f"a {a.colour} {a.shape} and a {b.colour} {b.shape}"


def test_rendered_shapes_have_their_colour_at_their_centre() -> None:
    plan = plan_images(1, seed=0)[0]
    image = render_image(plan)
    assert image.size == (64, 64) and image.mode == "RGB"
    for item in plan.objects:
        assert image.getpixel((item.x, item.y + item.size // 4)) == COLOURS[item.colour]
    assert image.getpixel((0, 0)) == plan.background


def test_fft_resampling_keeps_pitch_and_duration() -> None:
    t = np.arange(22050 * 3 // 2) / 22050
    wave = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = resample_fft(wave, 22050, 16000)
    assert out.dtype == np.float32 and out.size == 24000
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    assert abs(np.fft.rfftfreq(out.size, 1 / 16000)[spectrum.argmax()] - 440.0) < 2.0


def test_missing_espeak_says_how_to_install_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    monkeypatch.setattr(espeak, "_bundled", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"apt-get install -y espeak-ng.*pip install espeakng-loader"):
        synthesize_data(tmp_path, TINY)
    with pytest.raises(FileNotFoundError, match="espeak-ng is not installed"):
        synthesize_utterance(plan_speech("en", 1, 0)[0], tmp_path / "a.flac")


def test_the_backend_variable_picks_one_or_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv(espeak.BACKEND_ENV, "festival")
    with pytest.raises(ValueError, match="MMADAPTER_ESPEAK='festival'"):
        espeak.espeak_command()
    monkeypatch.setenv(espeak.BACKEND_ENV, "system")
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(espeak.EspeakMissing, match=r"MMADAPTER_ESPEAK=system"):
        espeak.espeak_command()  # the bundled one is not taken when the system one is asked for
    monkeypatch.setattr(espeak.shutil, "which", lambda name: "/opt/bin/espeak-ng")
    assert espeak.espeak_command() == ("/opt/bin/espeak-ng",)
    monkeypatch.setenv(espeak.BACKEND_ENV, "bundled")
    monkeypatch.setattr(espeak, "_bundled", lambda: ("python", "espeak_bundled.py"))
    assert espeak.espeak_command() == ("python", "espeak_bundled.py")


BACKENDS = [
    pytest.param("system", marks=pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng program")),
    pytest.param("bundled", marks=pytest.mark.skipif(espeak._bundled() is None, reason="no espeakng-loader wheel")),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_utterances_are_16k_mono_flac_one_digit_per_slot(backend: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(espeak.BACKEND_ENV, backend)
    slot = round(SLOT_S * 16000)
    for lang in LANGUAGES:
        for utt in plan_speech(lang, 4, seed=5):
            seconds = synthesize_utterance(utt, tmp_path / f"{utt.key}.flac")
            info = sf.info(tmp_path / f"{utt.key}.flac")
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            wave = decode_audio((tmp_path / f"{utt.key}.flac").read_bytes(), f"{utt.key}.flac")
            assert wave.size == info.frames == SLOTS * slot and seconds == pytest.approx(SLOTS * SLOT_S)
            assert 0.25 < np.abs(wave).max() <= 1.0
            # a spoken word starts each of the first len(digits) slots; the rest hold only the noise floor
            loud = [float(np.abs(wave[j * slot : (j + 1) * slot]).max()) for j in range(SLOTS)]
            assert all(v > 0.1 for v in loud[: len(utt.digits)]) and all(v < 0.05 for v in loud[len(utt.digits) :])
            onsets = [
                int(np.flatnonzero(np.abs(wave[j * slot : (j + 1) * slot]) > 0.05)[0]) for j in range(len(utt.digits))
            ]
            assert max(onsets) < 0.2 * 16000, (utt, onsets)  # quiet onsets (fricatives) start a little later


def test_word_spans_merge_closures_and_the_closest_runs() -> None:
    rate = 16000
    tone = np.sin(np.arange(rate // 5) / 3).astype(np.float32)  # 0.2 s
    gap, closure = np.zeros(rate // 2, np.float32), np.zeros(rate // 20, np.float32)  # 0.5 s, 50 ms
    wave = np.concatenate([gap, tone, closure, tone, gap, tone, gap])
    spans = word_spans(wave, rate, 2, "k")
    assert len(spans) == 2 and spans[0][1] - spans[0][0] > 0.4 * rate
    assert len(word_spans(wave, rate, 1, "k")) == 1
    with pytest.raises(RuntimeError, match="k: found 2 spoken words, expected 3"):
        word_spans(wave, rate, 3, "k")
    placed = paced([tone, tone[: rate // 10]], [0.0, 0.02])
    assert placed.size == SLOTS * round(SLOT_S * rate) and placed[round(SLOT_S * rate) + 400] != 0


@pytest.mark.skipif(espeak._bundled() is None, reason="no espeakng-loader wheel")
def test_the_bundled_espeak_serves_each_utterance_as_its_own_process_would(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(espeak.BACKEND_ENV, "bundled")
    command = espeak.espeak_command()
    assert command[:3] == (sys.executable, "-I", "-S") and command[3].endswith("espeak_bundled.py")
    # a voice whose breath noise differs from one second to the next unless the library's generator is reseeded
    utt = Utterance("de-k", "de", (9, 1, 2, 7, 7), "de+f2", 170, 50, (0.0,) * 5, 0)
    options = ["--stdout", "-v", utt.voice, "-s", str(utt.speed), "-p", str(utt.pitch), "-g", "60", utt.text]
    alone = subprocess.run([*command, *options], capture_output=True, check=True).stdout
    time.sleep(1.1)  # the library seeds that generator with the clock's seconds
    with espeak.Speaker() as speaker:
        assert speaker.serves
        served = [speaker.wav(utt.voice, utt.speed, utt.pitch, 60, utt.text) for _ in range(3)]
        assert served == [alone] * 3  # the library's state after one utterance never reaches the next
        unknown_voice = Utterance("k", "fr", (1, 2, 3), "xx+m1", 170, 50, (0.0,) * 3, 0)
        with pytest.raises(RuntimeError, match=r"k: espeak-ng failed .* no voice 'xx\+m1'"):
            synthesize_utterance(unknown_voice, tmp_path / "c.flac", speaker)
        assert speaker.wav(utt.voice, utt.speed, utt.pitch, 60, utt.text) == alone  # an error leaves it serving
        (server,) = speaker._servers
    assert server.returncode == 0 and speaker._servers == []
    one_process_each = espeak.Speaker(command)
    one_process_each.serves = False  # as where processes cannot fork
    synthesize_utterance(utt, tmp_path / "a.flac", one_process_each)
    synthesize_utterance(utt, tmp_path / "b.flac")
    assert (tmp_path / "a.flac").read_bytes() == (tmp_path / "b.flac").read_bytes()


@pytest.mark.skipif(espeak._bundled() is None, reason="no espeakng-loader wheel")
def test_the_bundled_server_answers_a_bad_request_and_goes_on(tmp_path) -> None:
    command = espeak._bundled()
    request = json.dumps({"voice": "en", "rate": 170, "pitch": 50, "gap": 0, "text": "1 2"}).encode()
    result = subprocess.run([*command, "--serve"], input=b"not json\n" + request + b"\n", capture_output=True)
    assert result.returncode == 0
    first, rest = result.stdout.split(b"\n", 1)
    status, size = first.split()
    assert status == b"error" and rest[: int(size)].startswith(b"not a JSON request")
    second, wav = rest[int(size) :].split(b"\n", 1)
    assert second.split()[0] == b"ok" and len(wav) == int(second.split()[1]) and wav[:4] == b"RIFF"


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_gives_identical_files_and_shards(backend: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(espeak.BACKEND_ENV, backend)
    one = synthesize_data(tmp_path / "a", TINY, seed=7, workers=2)
    synthesize_data(tmp_path / "b", TINY, seed=7, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert sorted(one.shards) == ["images", "images_instruct", "speech_de", "speech_en"]
    instruct = [json.loads(line) for line in one.manifests["images_instruct"]["train"].read_text().splitlines()]
    assert [r["key"] for r in instruct] == [r["key"] for r in images_train(one)]
    assert all(r["task"] in ("caption", "vqa") for r in instruct)
    stats = json.loads((one.shards["speech_en"]["train"] / "stats.json").read_text())
    assert stats["written"] == 3 and stats["skipped"] == {}
    test_en = [json.loads(line) for line in one.manifests["speech_en"]["test"].read_text().splitlines()]
    assert [(r["task"], r["lang"]) for r in test_en] == [("asr", "en")]
    assert test_en[0]["response"] == plan_speech("en", 1, seed=7)[0].text
    images = [json.loads(line) for line in one.manifests["images"]["train"].read_text().splitlines()]
    assert len(images) == 4 and {(r["task"], r["lang"]) for r in images} == {("caption", "en")}
    with Image.open(tmp_path / "a" / images[0]["image"]) as image:
        assert image.size == (64, 64)
    assert Path(one.shard_pattern("images", "test")).is_file()
    other = synthesize_data(tmp_path / "c", TINY, seed=8, workers=2)
    assert _digest(tmp_path / "c") != _digest(tmp_path / "a") and other.seconds == one.seconds  # fixed-length clips
