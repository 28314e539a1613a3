"""``espeak-ng --stdout -v VOICE -s WPM -p PITCH -g GAP TEXT`` through a libespeak-ng shared library.

Used when the ``espeak-ng`` program is not installed but the ``espeakng-loader`` wheel (which bundles
libespeak-ng and its voice data) is: :func:`mmadapter.data.espeak.espeak_command` runs this file as
``python -I -S espeak_bundled.py --library LIB --data DIR <espeak-ng options> TEXT``. It prints a 16-bit mono
WAV to stdout, as the program does.

One process per utterance, like the program: the library keeps state from one utterance to the next, so two
utterances spoken by one process can come out a few samples different from the same two spoken apart.
Standard library only, so that the interpreter starts in milliseconds (``-S`` skips site-packages).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import sys
import wave

AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT
PARAMETERS = {"rate": 1, "pitch": 3, "wordgap": 7}  # espeak_PARAMETER
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def synthesize(library: str, data: str, voice: str, rate: int, pitch: int, gap: int, text: str) -> tuple[bytes, int]:
    """16-bit little-endian PCM samples of ``text`` and their sample rate.

    Raises:
        RuntimeError: the library does not initialise, does not know ``voice``, or fails to speak.
    """
    lib = ctypes.CDLL(library)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate_hz = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
    if rate_hz <= 0:
        raise RuntimeError(f"libespeak-ng ({library}) did not initialise with the data in {data}")
    chunks: list[bytes] = []

    def collect(samples: ctypes._Pointer, count: int, _events: int) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(samples, count * 2))
        return 0

    callback = CALLBACK(collect)  # kept alive until synthesis ends
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise RuntimeError(f"libespeak-ng has no voice {voice!r}")
    for name, value in (("rate", rate), ("pitch", pitch), ("wordgap", gap)):
        lib.espeak_SetParameter(PARAMETERS[name], value, 0)
    encoded = text.encode()
    if lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, 0, None, None) != 0:
        raise RuntimeError(f"libespeak-ng failed to speak {text!r}")
    lib.espeak_Synchronize()
    return b"".join(chunks), rate_hz


def to_wav(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="path of libespeak-ng")
    parser.add_argument("--data", required=True, help="its espeak-ng-data directory")
    parser.add_argument("--stdout", action="store_true", required=True, help="write the WAV to stdout")
    parser.add_argument("-v", dest="voice", default="en")
    parser.add_argument("-s", dest="rate", type=int, default=175, help="words per minute")
    parser.add_argument("-p", dest="pitch", type=int, default=50, help="0-99")
    parser.add_argument("-g", dest="gap", type=int, default=0, help="pause between words, units of 10 ms")
    parser.add_argument("text")
    args = parser.parse_args(argv)
    try:
        pcm, rate = synthesize(args.library, args.data, args.voice, args.rate, args.pitch, args.gap, args.text)
    except (OSError, RuntimeError) as e:
        print(f"espeak_bundled: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(to_wav(pcm, rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
