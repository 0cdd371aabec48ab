"""One registry type behind students, methods, teacher formats and export formats."""
import difflib

from .errors import EdgekdError


def did_you_mean(name: str, known) -> str:
    """ "; did you mean 'x'?" for the closest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, object] = {}

    def register(self, name: str):
        def add(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = obj
            return obj
        return add

    def get(self, name: str):
        if name not in self._entries:
            raise EdgekdError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())} "
                              f"(choose one of: {', '.join(self.names())})")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: str) -> bool:
        return name in self._entries
