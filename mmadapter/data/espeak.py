"""Which espeak-ng speaks the demo's digits: the system program, or the one the ``espeakng-loader`` wheel bundles.

:func:`espeak_command` returns the start of a command line that takes ``espeak-ng``'s own options
(``--stdout -v VOICE -s WPM -p PITCH -g GAP TEXT``) and prints a WAV; a :class:`Speaker` runs it. The
``espeak-ng`` program on ``PATH`` comes first (``scripts/setup_env.sh`` installs the Debian package when it
may); without it, the libespeak-ng and voice data of the ``espeakng-loader`` wheel (a dependency on Linux
x86_64, macOS arm64 and Windows) are driven by :mod:`mmadapter.data.espeak_bundled`: a speaker keeps one of its
servers per thread where processes can fork (13 ms an utterance on this project's 2-core machine, against
82 ms for a Python process per utterance and 17 ms for the program), else it starts one process per utterance.
``MMADAPTER_ESPEAK=system`` or ``=bundled`` picks one. The two differ in version (the wheel holds 1.52), so
their audio differs slightly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["BACKEND_ENV", "EspeakMissing", "Speaker", "espeak_available", "espeak_command"]

BACKEND_ENV = "MMADAPTER_ESPEAK"
BUNDLED_SCRIPT = Path(__file__).with_name("espeak_bundled.py")


class EspeakMissing(FileNotFoundError):
    """Neither the espeak-ng program nor the espeakng-loader wheel is installed."""


def _bundled() -> tuple[str, ...] | None:
    try:
        import espeakng_loader
    except ImportError:
        return None
    library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(library).is_file():
        return None
    return (sys.executable, "-I", "-S", str(BUNDLED_SCRIPT), "--library", library, "--data", data)


def espeak_command() -> tuple[str, ...]:
    """The command-line prefix that runs espeak-ng (see the module docstring for which one).

    Raises:
        EspeakMissing: neither is installed (or not the one :data:`BACKEND_ENV` names), with how to install it.
        ValueError: :data:`BACKEND_ENV` is neither ``system`` nor ``bundled``.
    """
    choice = os.environ.get(BACKEND_ENV, "")
    if choice not in ("", "system", "bundled"):
        raise ValueError(f"{BACKEND_ENV}={choice!r}: expected 'system' or 'bundled'")
    program = shutil.which("espeak-ng") if choice in ("", "system") else None
    if program is not None:
        return (program,)
    bundled = _bundled() if choice in ("", "bundled") else None
    if bundled is not None:
        return bundled
    raise EspeakMissing(
        "espeak-ng is not installed; the demo synthesises its speech with it. Install the system package "
        "(`apt-get install -y espeak-ng` on Debian/Ubuntu, which scripts/setup_env.sh does when run as root or "
        "with password-less sudo; `brew install espeak-ng` on macOS) or the wheel that bundles it "
        f"(`pip install espeakng-loader`), then run again{f' ({BACKEND_ENV}={choice})' if choice else ''}."
    )


def espeak_available() -> bool:
    """Whether :func:`espeak_command` finds an espeak-ng (for tests that need speech)."""
    try:
        espeak_command()
    except (EspeakMissing, ValueError):
        return False
    return True


class Speaker:
    """Speaks utterances with an espeak-ng command line (default :func:`espeak_command`); safe to share between
    threads, which then speak in parallel. Close it (or use it as a context manager) to stop its servers."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command = tuple(command) if command is not None else espeak_command()
        self.serves = hasattr(os, "fork") and str(BUNDLED_SCRIPT) in self.command
        self._local = threading.local()
        self._servers: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def wav(self, voice: str, rate: int, pitch: int, gap: int, text: str) -> bytes:
        """``text`` in ``voice`` at ``rate`` words per minute, ``pitch`` (0–99) and ``gap`` (10 ms units between
        words), as the WAV espeak-ng prints.

        Raises:
            RuntimeError: espeak-ng failed or printed no audio; the message holds its command and error.
        """
        if self.serves:
            return self._ask(dict(voice=voice, rate=rate, pitch=pitch, gap=gap, text=text))
        cmd = [*self.command, "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(gap), text]
        result = subprocess.run(cmd, capture_output=True, check=False)
        if result.returncode != 0 or len(result.stdout) < 100:
            raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {result.stderr.decode().strip()}")
        return result.stdout

    def _ask(self, request: dict) -> bytes:
        server = getattr(self._local, "server", None)
        if server is None:
            server = subprocess.Popen([*self.command, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            with self._lock:
                self._servers.append(server)
            self._local.server = server
        try:
            server.stdin.write((json.dumps(request) + "\n").encode())
            server.stdin.flush()
            status, size = server.stdout.readline().split()
            payload = server.stdout.read(int(size))
        except (OSError, ValueError) as e:
            raise RuntimeError(f"the espeak-ng server ({' '.join(self.command)} --serve) stopped: {e}") from e
        if status != b"ok" or len(payload) < 100:
            raise RuntimeError(f"espeak-ng failed ({' '.join(self.command)}): {payload.decode(errors='replace')}")
        return payload

    def close(self) -> None:
        """Stop the servers (each ends at the end of its input); the speaker starts new ones if used again."""
        with self._lock:
            servers, self._servers = self._servers, []
        self._local = threading.local()
        for server in servers:
            server.stdin.close()
            server.wait()
            server.stdout.close()

    def __enter__(self) -> Speaker:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
