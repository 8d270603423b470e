"""The toolkit's domain errors: problems a user can fix (a bad file, option or state).

Every domain error derives from :class:`PointillistError` (and from the built-in class it
has always been, ``ValueError`` or ``RuntimeError``, so ``except ValueError`` keeps
working). The command line prints a domain error as one line,
``error: <file or option>: <problem>`` plus an optional ``hint:`` line, and exits with
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["PointillistError", "InputError", "InputProblems", "ConfigError", "format_error"]


class PointillistError(Exception):
    """Base of every domain error.

    Attributes:
        hint: an optional second line telling the user what to do (``None`` when the
            message says it all).
    """

    hint: str | None = None

    def with_hint(self, hint: str) -> PointillistError:
        """Attach ``hint`` and return ``self`` (``raise Err(...).with_hint("...")``)."""
        self.hint = hint
        return self


class InputError(PointillistError, ValueError):
    """Bad user input that has no more specific error class (an option, a path, a list)."""

    def __init__(self, where: str, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: {problem}")
        self.hint = hint


class InputProblems(InputError):
    """Several problems of the user's input found together, so that one attempt names them
    all (``pointillist run``'s checks before any worker starts).

    Attributes:
        problems: one line per problem, each naming its file or option.
    """

    def __init__(self, where: str, problems: list[str], hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__(where, f"{len(self.problems)} problems found (every one listed below)", hint)


class StoreError(PointillistError, ValueError):
    """A store is missing, malformed or inconsistent (re-exported by
    :mod:`pointillist_data.store.base`, where its subclasses live)."""


class ConfigError(PointillistError, ValueError):
    """A stage configuration (JSON file or options) has an unknown field or a bad value."""


def format_error(e: BaseException) -> str | None:
    """The one-line text of a user-fixable error, or ``None`` for a bug.

    Domain errors print their message (an :class:`InputProblems` then its problems, one an
    indented line); ``OSError`` subclasses that name a file (missing,
    permission denied, is a directory, ...) print ``<file>: <reason>``.
    """
    if isinstance(e, PointillistError):
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        listed = "".join(f"\n  {p}" for p in getattr(e, "problems", None) or [])  # InputProblems: one a line
        return text + listed + (f"\nhint: {e.hint}" if e.hint else "")
    if isinstance(e, OSError) and (e.filename is not None or isinstance(e, (FileNotFoundError, PermissionError))):
        where = e.filename if e.filename is not None else ""
        reason = e.strerror or str(e)
        return f"{where}: {reason}" if where else reason
    return None
