"""A registry of named entries (the methods, the tasks) filled by the modules that define them."""
from __future__ import annotations

import importlib


class Registry(dict):
    """name -> entry (anything with a `name`); `load()` imports the registering modules first."""

    def __init__(self, kind: str, modules: tuple[str, ...]):
        super().__init__()
        self.kind, self.modules = kind, modules

    def register(self, entry):
        """Add an entry (a second one under a taken name is refused) and return it."""
        if entry.name in self and self[entry.name] is not entry:
            raise ValueError(f"a {self.kind} named {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def load(self) -> Registry:
        for module in self.modules:
            importlib.import_module(module)
        return self

    def find(self, name: str):
        """The entry `name`; SystemExit naming the entries there are."""
        entry = self.load().get(name)
        if entry is None:
            raise SystemExit(f"no {self.kind} {name!r}; the {self.kind}s: {', '.join(self)}")
        return entry
