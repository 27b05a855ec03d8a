"""The one registry helper that every plug-in kind uses (importers, augmenters, fusions, ...).

A plug-in registers under the name the configuration uses, so that ``model.fusion: cross`` in
YAML, the config object, the code and the results table all name the same thing.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from rectune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plug-in. ``kind`` is how errors call the plug-ins (e.g. ``"importer"``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, key: str | None = None) -> T:
        """The plug-in called ``name``; an unknown name raises a ConfigError listing the valid ones.

        ``key`` is the config key or option that gave the name, for the error message.
        """
        try:
            return self._items[name]
        except KeyError:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'; expected one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]
