"""How recipe problems are reported: :class:`RecipeError` lists ``(dotted path, message)`` pairs, and
:func:`describe_error` turns one pydantic error into such a pair, with the closest known key for an unknown one."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel

__all__ = ["RecipeError", "describe_error"]


class RecipeError(ValueError):
    """A recipe has one or more problems; ``problems`` holds ``(dotted path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None, hint: str | None = None) -> None:
        self.problems, self.source, self.hint = problems, source, hint
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}" + (f"\n{hint}" if hint else ""))


def describe_error(root: type[BaseModel], err: Any, prefix: str = "") -> tuple[str, str]:
    """``(dotted path, message)`` of one pydantic error found validating ``root`` (under ``prefix``)."""
    loc = [str(p) for p in err["loc"]]
    path = ".".join(([prefix] if prefix else []) + loc)
    msg = err["msg"]
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's / a dataclass's
        known = _fields_at(root, err["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        msg = f"unknown key{f'; did you mean {close[0]!r}?' if close else ''} Known: {', '.join(sorted(known))}"
    elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return path, msg


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model (or dataclass) found by walking ``loc`` down from ``model`` through fields,
    dicts and lists."""
    tp: Any = model
    for part in loc:
        tp = _model_in(tp)
        if tp is None:
            return []
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return []
            tp = hints[part]
        else:
            args = typing.get_args(tp)
            tp = args[-1] if args else None
    tp = _model_in(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []


def _model_in(tp: Any) -> Any:
    """Unwrap Optional / Annotated / SerializeAsAny down to a model or a container type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else (args[0] if args else None)
        else:
            return tp
