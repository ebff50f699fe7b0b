"""Name -> constructor registries for the axes under study (models, schemes, data sets).

The names are what users type (``model=resnet50``), what run directories and
reports group by, and what the tests parametrise over.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from nfbench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
