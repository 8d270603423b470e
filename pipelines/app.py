"""The typer application shared by the CLI modules, and its error handling.

Every command registered on :data:`app` runs inside :func:`domain_errors`: a domain error
(:class:`pointillist_data.errors.PointillistError`, or an ``OSError`` naming a file) ends
as one line on stderr, ``error: <file or option>: <problem>`` (plus ``hint: ...`` where one
helps), with exit code 2 and no traceback. ``--debug`` (or ``POINTILLIST_DEBUG=1``) shows
the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from pointillist_data.errors import format_error

__all__ = ["app", "sub_app", "console", "err_console", "FLAME_OPT", "domain_errors", "debug_enabled", "EXIT_USAGE"]

EXIT_USAGE = 2
console = Console()
err_console = Console(stderr=True, highlight=False)
_state = {"debug": False}


def debug_enabled() -> bool:
    """True when ``--debug`` was given or ``POINTILLIST_DEBUG`` is set to a true value."""
    return _state["debug"] or os.environ.get("POINTILLIST_DEBUG", "").lower() in ("1", "true", "yes")


@contextmanager
def domain_errors():
    """Turn domain errors into one line and exit code 2 (see the module docstring)."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as e:
        text = format_error(e)
        if text is None or debug_enabled():
            raise
        first, _, hint = text.partition("\n")
        err_console.print(f"error: {first}", markup=False, soft_wrap=True)
        if hint:
            err_console.print(hint, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


class _App(typer.Typer):
    """A Typer whose commands run inside :func:`domain_errors`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable:
        register = super().command(*args, **kwargs)

        def decorator(f: Callable) -> Callable:
            @functools.wraps(f)
            def wrapped(*a: Any, **kw: Any) -> Any:
                with domain_errors():
                    return f(*a, **kw)

            register(wrapped)
            return f

        return decorator


app = _App(help="pointillist: regenerate AvatarPointillist-style tokenized Gaussian head-avatar datasets.",
           no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", envvar="POINTILLIST_DEBUG",
                                     help="Show full tracebacks for errors (also POINTILLIST_DEBUG=1).")) -> None:
    """pointillist: regenerate AvatarPointillist-style tokenized Gaussian head-avatar datasets."""
    _state["debug"] = debug
    if debug:
        app.pretty_exceptions_enable = False


def read_image(path, where: str | None = None):
    """A user's image file as a NumPy array ``(H, W)`` or ``(H, W, C)`` uint8, as imageio reads it.

    Raises:
        InputError: ``where`` (default: the path) names a missing or unreadable file.
    """
    import imageio.v3 as iio

    from pointillist_data.errors import InputError

    where = where or str(path)
    if not os.path.isfile(path):
        raise InputError(where, "image not found")
    try:
        return iio.imread(path)
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(where, f"not a readable image ({type(e).__name__}: {e})") from None


def sub_app(**kwargs: Any) -> typer.Typer:
    """A command group whose commands also run inside :func:`domain_errors`."""
    return _App(no_args_is_help=True, pretty_exceptions_show_locals=False, **kwargs)


FLAME_OPT = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL",
                         help="FLAME model .pkl/.npz (FLAME 2020/2023). Default: the built-in demo head "
                              "(FLAME 2023 Open topology, 5143 vertices, 10144 faces).")
