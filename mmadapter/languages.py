"""Language tags as samples carry them (``lang``: ``en``, ``zh-CN``, ``pt_BR``): their base language and
their usual spelling, shared by the metrics (normaliser, CER languages, report groups) and by the language
experts of MoLoRA (:mod:`mmadapter.lora.molora`)."""

from __future__ import annotations

import re

__all__ = ["base_language", "language_tag"]


def base_language(lang: str | None) -> str | None:
    """The base code of a language tag, lower-cased: ``zh-CN`` → ``zh``, ``en_US`` → ``en``."""
    if not lang:
        return None
    return re.split(r"[-_]", lang.strip(), maxsplit=1)[0].lower() or None


def language_tag(lang: str | None) -> str | None:
    """A language tag in its usual case, so that spellings of one tag group together: ``ZH-cn`` → ``zh-CN``,
    ``en_us`` → ``en-US``, ``zh-hant-tw`` → ``zh-Hant-TW`` (language lower, script title, region upper)."""
    if not lang or not lang.strip():
        return None
    first, *rest = re.split(r"[-_]", lang.strip())
    subtags = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            subtags.append(part.title())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            subtags.append(part.upper())
        else:
            subtags.append(part.lower())
    return "-".join(subtags)
