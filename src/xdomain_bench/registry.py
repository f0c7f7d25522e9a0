"""A small name -> factory registry (timm style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown_name(self.kind, name, list(self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


_LOADED_GROUPS: set[str] = set()


def load_entry_points(group: str, register: Callable[[str], Callable[[T], T]], registry: Registry[T]) -> None:
    """Import every installed plugin of entry-point `group` once per process.

    An entry point names a module (its import registers through the decorators) or a class, which is registered
    under the entry point's name unless the import registered it already."""
    from importlib.metadata import entry_points

    from .errors import ConfigError

    if group in _LOADED_GROUPS:
        return
    _LOADED_GROUPS.add(group)
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
        except ImportError as exc:
            raise ConfigError(f"plugin '{ep.name}' ({group} = {ep.value}) cannot be imported: {exc}") from None
        if isinstance(obj, type) and ep.name not in registry:
            register(ep.name)(obj)
