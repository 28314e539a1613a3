"""``espeak-ng --stdout -v VOICE -s WPM -p PITCH -g GAP TEXT`` through a libespeak-ng shared library.

Used when the ``espeak-ng`` program is not installed but the ``espeakng-loader`` wheel (which bundles
libespeak-ng and its voice data) is: :class:`mmadapter.data.espeak.Speaker` runs this file as
``python -I -S espeak_bundled.py --library LIB --data DIR``, followed by

- ``--stdout <espeak-ng options> TEXT``: speak one utterance and print a 16-bit mono WAV, as the program does;
- ``--serve``: speak many. Each line of stdin is one utterance (JSON: ``voice``, ``rate``, ``pitch``, ``gap``,
  ``text``); each answer on stdout is a line ``ok N`` or ``error N`` followed by N bytes (the WAV, or the
  message in UTF-8). The library is loaded and initialised once; every utterance is spoken by a child forked
  from that state, which is what makes the server cheap and every answer the same as ``--stdout`` gives.

The library keeps state from one utterance to the next (two utterances spoken by one process can come out a
few samples different from the same two spoken apart), so no process speaks twice. Its noise generator (breath
and frication) is seeded with the clock when it initialises, so every utterance reseeds it with
:data:`RAND_SEED` first: otherwise the same utterance comes out different from one second to the next. Standard
library only, so that the interpreter starts in milliseconds (``-S`` skips site-packages).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import sys
import wave
from typing import BinaryIO

AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT
PARAMETERS = {"rate": 1, "pitch": 3, "wordgap": 7}  # espeak_PARAMETER
RAND_SEED = 1  # espeak_ng_SetRandSeed before each utterance
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def load(library: str, data: str) -> tuple[ctypes.CDLL, int]:
    """libespeak-ng, initialised with the voice data in ``data``, and its sample rate.

    Raises:
        OSError: the library does not load.
        RuntimeError: it does not initialise.
    """
    lib = ctypes.CDLL(library)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # 1.52 on; older versions use libc's rand(), unseeded
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
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
    return lib, rate_hz


def speak(lib: ctypes.CDLL, rate_hz: int, voice: str, rate: int, pitch: int, gap: int, text: str) -> bytes:
    """``text`` spoken by the initialised ``lib`` as a 16-bit mono WAV.

    Raises:
        RuntimeError: the library does not know ``voice``, or fails to speak.
    """
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
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(RAND_SEED)
    encoded = text.encode()
    if lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, 0, None, None) != 0:
        raise RuntimeError(f"libespeak-ng failed to speak {text!r}")
    lib.espeak_Synchronize()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(b"".join(chunks))
    return out.getvalue()


def _answer(out: BinaryIO, status: str, payload: bytes) -> None:
    out.write(f"{status} {len(payload)}\n".encode() + payload)
    out.flush()


def _speak_in_child(lib: ctypes.CDLL, rate_hz: int, request: dict) -> tuple[str, bytes]:
    """Speak ``request`` in a child forked from the freshly initialised library; the parent's state is kept."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: speak, hand the answer over, and leave without running any cleanup
        os.close(read_end)
        try:
            keys = ("voice", "rate", "pitch", "gap", "text")
            status, payload = "ok", speak(lib, rate_hz, *(request[k] for k in keys))
        except Exception as e:  # every failure goes back to the client as its message
            status, payload = "error", str(e).encode()
        with os.fdopen(write_end, "wb") as w:
            w.write(status.encode() + b"\n" + payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        answer = r.read()
    _, code = os.waitpid(pid, 0)
    status, _, payload = answer.partition(b"\n")
    if code != 0 or status not in (b"ok", b"error"):
        return "error", f"libespeak-ng crashed (wait status {code}) speaking {request.get('text')!r}".encode()
    return status.decode(), payload


def serve(library: str, data: str, requests: BinaryIO, out: BinaryIO) -> int:
    """Answer every request line of ``requests`` on ``out`` (see the module docstring) until end of input."""
    try:
        lib, rate_hz = load(library, data)
    except (OSError, RuntimeError) as e:
        print(f"espeak_bundled: {e}", file=sys.stderr)
        return 1
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError as e:
            _answer(out, "error", f"not a JSON request ({e}): {line[:80]!r}".encode())
            continue
        _answer(out, *_speak_in_child(lib, rate_hz, request))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="path of libespeak-ng")
    parser.add_argument("--data", required=True, help="its espeak-ng-data directory")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdout", action="store_true", help="write the WAV of TEXT to stdout")
    mode.add_argument("--serve", action="store_true", help="speak one JSON request per line of stdin")
    parser.add_argument("-v", dest="voice", default="en")
    parser.add_argument("-s", dest="rate", type=int, default=175, help="words per minute")
    parser.add_argument("-p", dest="pitch", type=int, default=50, help="0-99")
    parser.add_argument("-g", dest="gap", type=int, default=0, help="pause between words, units of 10 ms")
    parser.add_argument("text", nargs="?")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.library, args.data, sys.stdin.buffer, sys.stdout.buffer)
    if args.text is None:
        parser.error("--stdout needs the TEXT to speak")
    try:
        lib, rate_hz = load(args.library, args.data)
        wav = speak(lib, rate_hz, args.voice, args.rate, args.pitch, args.gap, args.text)
    except (OSError, RuntimeError) as e:
        print(f"espeak_bundled: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(wav)
    return 0


if __name__ == "__main__":
    sys.exit(main())
