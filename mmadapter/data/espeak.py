"""Which espeak-ng speaks the demo's digits: the system program, or the one the ``espeakng-loader`` wheel bundles.

:func:`espeak_command` returns the start of a command line that takes ``espeak-ng``'s own options
(``--stdout -v VOICE -s WPM -p PITCH -g GAP TEXT``) and prints a WAV. The ``espeak-ng`` program on ``PATH``
comes first (``scripts/setup_env.sh`` installs the Debian package when it may); without it, the libespeak-ng
and voice data of the ``espeakng-loader`` wheel (a dependency on Linux x86_64, macOS arm64 and Windows) are
driven by :mod:`mmadapter.data.espeak_bundled`, one process per utterance. ``MMADAPTER_ESPEAK=system`` or
``=bundled`` picks one. The two differ in version (the wheel holds 1.52), so their audio differs slightly.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["BACKEND_ENV", "EspeakMissing", "espeak_available", "espeak_command"]

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
