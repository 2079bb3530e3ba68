"""The template registry: template name -> class, filled by the `register` decorator.

A template class declares what its `expect` mapping holds (`EXPECT`, field -> `Field`) and
how many target variables it takes (`ARITY`), so an invariant file can be validated
without executing anything and without knowing the mining logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple, Type

NUMBER = (int, float)


@dataclass(frozen=True)
class Field:
    """One entry of a template's `expect` mapping.

    `types` are the accepted Python types after YAML/JSON loading (None allowed only when
    `nullable`); `required` says whether the entry must be present.
    """

    types: Tuple[type, ...]
    required: bool = True
    nullable: bool = False
    doc: str = ""
    choices: Tuple[Any, ...] = ()  # when set, the only values accepted

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) and bool not in self.types:
            return False  # YAML `true` must not pass as the number 1
        if self.choices and value not in self.choices:
            return False
        return isinstance(value, self.types)

    def type_names(self) -> str:
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        names = [t.__name__ for t in self.types]
        if self.nullable:
            names.append("null")
        return " | ".join(names)


TEMPLATES: Dict[str, Type[Any]] = {}


def register(name: str) -> Callable[[Type[Any]], Type[Any]]:
    """Class decorator: registers a template under `name`; a duplicate name is an error."""

    def decorate(cls: Type[Any]) -> Type[Any]:
        if name in TEMPLATES:
            raise ValueError(f"template {name!r} is registered twice "
                             f"({TEMPLATES[name].__qualname__} and {cls.__qualname__})")
        cls.NAME = name
        TEMPLATES[name] = cls
        return cls

    return decorate


def template(name: str) -> Type[Any]:
    """The class registered under `name`; KeyError names the known templates."""
    _load_builtin_templates()
    try:
        return TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise KeyError(f"unknown template {name!r} (known: {known})") from None


def known_templates() -> Dict[str, Type[Any]]:
    """All registered templates (the built-in ones are imported on first use)."""
    _load_builtin_templates()
    return dict(TEMPLATES)


def _load_builtin_templates() -> None:
    # Imported for its side effect: every template module registers itself.
    from invariants import templates  # noqa: F401
