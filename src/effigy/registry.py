"""One small registry for every named thing a user picks by name: recipes, zoo models, suites, peers,
kernel backends, caches. A lookup of an unknown name fails with one line that lists the known ones, so
no module writes its own table and its own error.
"""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from effigy.errors import EffigyError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    Args:
        kind: what the entries are ("recipe", "zoo model"), used in error messages.
        error: the :class:`EffigyError` subclass an unknown name raises (a checkpoint-side registry may
            want :class:`effigy.errors.CheckpointError`).

    >>> backends = Registry("kernel backend")
    >>> backends.register("reference", object())
    >>> "reference" in backends
    True
    """

    def __init__(self, kind: str, error: type[EffigyError] = UnknownNameError, listing: str | None = None) -> None:
        self.kind = kind
        self._error = error
        self._listing = listing  # where a user sees every name, when there are too many for one line
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a second entry under the same name is a programming error."""
        if name in self._entries:
            raise EffigyError(f"{self.kind} {name!r} is registered twice.")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry under ``name``, or one clear error that lists the known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(f"unknown {self.kind} {name!r:.80}: {self._choices(name)}.") from None

    def _choices(self, name: str) -> str:
        known = self.names()
        listed = ", ".join(known)
        if self._listing is None or len(listed) <= 160:
            return f"choose one of {listed}"
        import difflib

        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"{hint}`{self._listing}` lists all {len(known)}"

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
