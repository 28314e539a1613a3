"""One generic registry of named builders, one instance per component kind.

A registry maps a snake_case name (the builder function's name) to a builder. Recipes name components by
these keys, so lookups take the dotted recipe key that asked (``model.encoders.audio.name``) and put it in
the error together with every name that is available.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["REGISTRIES", "ComponentSpec", "Registry"]


class ComponentSpec(BaseModel):
    """How a recipe names one component: ``{name: <registry key>, name_or_path: ..., ...options}``.

    Each family subclasses this with its own options; the registry keeps that subclass next to the builder
    so that recipes are validated against it. ``config`` builds random weights of any shape instead of
    loading ``name_or_path`` (tests, benchmarks, ``mmadapter summary``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    name_or_path: str | None = None
    config: dict[str, Any] | None = None

    @property
    def reloadable(self) -> bool:
        """True when the weights can be fetched again from ``name_or_path`` (so artefacts need not hold them)."""
        return self.name_or_path is not None and self.config is None and not self.name.endswith("_test")


class Registry(Generic[F]):
    """Named builders of one component kind.

    Args:
        kind: What the registry holds, in the singular ("encoder", "projector"); used in messages and by
            ``mmadapter list``.
    """

    def __init__(self, kind: str) -> None:
        if kind in REGISTRIES:
            raise ValueError(f"a registry of kind {kind!r} already exists")
        self.kind = kind
        self._entries: dict[str, F] = {}
        self._specs: dict[str, type[ComponentSpec]] = {}
        REGISTRIES[kind] = self

    def register(
        self, fn: F | None = None, *, name: str | None = None, spec: type[ComponentSpec] = ComponentSpec
    ) -> Any:
        """Register ``fn`` under ``name`` (default: its ``__name__``) with the spec model its options follow.

        Usable as ``@reg.register`` or ``@reg.register(spec=WhisperSpec)``.
        """

        def add(f: F) -> F:
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered (by {self._entries[key].__module__})")
            self._entries[key] = f
            self._specs[key] = spec
            return f

        return add(fn) if fn is not None else add

    def get(self, name: str, key: str | None = None) -> F:
        """The builder registered as ``name``.

        Args:
            name: Registry key.
            key: Dotted recipe key that asked for it, named in the error.

        Raises:
            KeyError: ``name`` is unknown; the message lists every available name and the closest match.
        """
        try:
            return self._entries[name]
        except KeyError:
            where = f" (asked for by {key})" if key else ""
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}{where}{hint} Available: {', '.join(sorted(self._entries)) or 'none'}"
            ) from None

    def spec(self, name: str, key: str | None = None) -> type[ComponentSpec]:
        """The spec model of ``name``'s options (raises like :meth:`get`)."""
        self.get(name, key)
        return self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


REGISTRIES: dict[str, Registry[Any]] = {}
