"""The typer application shared by the CLI modules, and its error handling.

Every command registered on :data:`app` runs inside :func:`domain_errors`: a domain error
(:class:`pointillist_data.errors.PointillistError`, or an ``OSError`` naming a file) ends
as one line on stderr, ``error: <file or option>: <problem>`` (plus ``hint: ...`` where one
helps), with exit code 2 and no traceback. ``--debug`` (or ``POINTILLIST_DEBUG=1``) shows
the traceback instead; third-party log lines (MediaPipe, dask) are hidden unless ``--verbose``
(:mod:`pointillist_data.logs`). Anything else is a bug and keeps its traceback. Ctrl-C ends as the
one line ``interrupted; re-run the same command to resume`` on stderr, exit code 130.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from pointillist_data.errors import format_error

__all__ = ["app", "sub_app", "console", "err_console", "FLAME_OPT", "domain_errors", "debug_enabled", "EXIT_USAGE",
           "EXIT_INTERRUPTED", "INTERRUPTED_LINE",
           "COMMAND_PANELS", "command_order", "print_plan"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
INTERRUPTED_LINE = "interrupted; re-run the same command to resume"
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
    except KeyboardInterrupt:  # Ctrl-C: what is done stays done (outputs renamed into place, checkpoints)
        err_console.print(INTERRUPTED_LINE, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
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


#: The help's command panels, in pipeline order; each command's place in them.
COMMAND_PANELS: dict[str, list[str]] = {
    "Data stages (one participant)": ["landmarks", "track", "fit", "canonicalize", "tokenize", "supervise", "shard"],
    "Run and status": ["run", "status", "import", "validate", "inspect", "split"],
    "Model": ["train-ar", "train-decoder", "generate-points", "avatar", "animate", "render", "evaluate"],
    "Utilities": ["demo", "demo-capture", "experiment", "flame"],
}
_PANEL_OF = {c: p for p, cs in COMMAND_PANELS.items() for c in cs}
_ORDER = [c for cs in COMMAND_PANELS.values() for c in cs]


def command_order(name: str | None) -> int:
    """Position of command ``name`` in :data:`COMMAND_PANELS` (unknown ones last)."""
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


class _App(typer.Typer):
    """A Typer whose commands run inside :func:`domain_errors` and sit in the help panel
    :data:`COMMAND_PANELS` gives them."""

    def command(self, *args: Any, **kwargs: Any) -> Callable:
        name = args[0] if args else kwargs.get("name")
        if name in _PANEL_OF:
            kwargs.setdefault("rich_help_panel", _PANEL_OF[name])
        register = super().command(*args, **kwargs)

        def decorator(f: Callable) -> Callable:
            @functools.wraps(f)
            def wrapped(*a: Any, **kw: Any) -> Any:
                with domain_errors():
                    return f(*a, **kw)

            register(wrapped)
            return f

        return decorator


def _no_flag_metavar() -> None:
    """Typer prints ``<bool>`` beside on/off flags (``--help``, ``--verbose/--no-verbose``), which
    take no value; show nothing there, as click and argparse do."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_pointillist", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._pointillist = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


def _markdown_keeps_angle_brackets() -> None:
    """Help is rendered as Markdown (so that wrapped docstring lines join into paragraphs), where
    ``<epoch>`` would be an HTML tag and vanish; escape ``<`` so that placeholders in file
    names (``tracked_flame_params_<epoch>.npz``) stay visible."""
    import typer.rich_utils as ru

    make = ru._make_rich_text
    if getattr(make, "_pointillist", False):
        return

    def _make_rich_text(*, text: str, style: str = "", markup_mode):
        if markup_mode == ru.MARKUP_MODE_MARKDOWN:  # not inside `code` spans, which show it as is
            text = "".join(p if p.startswith("`") else p.replace("<", "\\<")
                           for p in re.split(r"(`[^`]*`)", text))
        return make(text=text, style=style, markup_mode=markup_mode)

    _make_rich_text._pointillist = True  # type: ignore[attr-defined]
    ru._make_rich_text = _make_rich_text


_no_flag_metavar()
_markdown_keeps_angle_brackets()

app = _App(help="pointillist: regenerate AvatarPointillist-style tokenized Gaussian head-avatar datasets.",
           no_args_is_help=True, pretty_exceptions_show_locals=False, rich_markup_mode="markdown",
           context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("pointillist")
        except PackageNotFoundError:  # run from a source tree that was never installed
            v = "unknown (not installed)"
        console.print(f"pointillist {v}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", envvar="POINTILLIST_DEBUG",
                                     help="Show full tracebacks for errors (also POINTILLIST_DEBUG=1)."),
          verbose: bool = typer.Option(False, "--verbose", envvar="POINTILLIST_VERBOSE",
                                       help="Keep third-party log lines (MediaPipe / TFLite, absl, dask "
                                            "distributed), hidden by default (also POINTILLIST_VERBOSE=1)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """pointillist: regenerate AvatarPointillist-style tokenized Gaussian head-avatar datasets."""
    _state["debug"] = debug
    from pointillist_data.logs import quiet_third_party

    quiet_third_party(verbose)  # before any stage imports mediapipe or starts dask workers
    if debug:
        app.pretty_exceptions_enable = False


def print_plan(what: str, device: Any, preset: str, warning: str | None = None) -> None:
    """One line naming where a job runs and with which preset (a stage budget, or a model
    preset for the trainers), and the plan's warning (a CPU budget on a machine with CUDA)."""
    console.print(f"{what} on {device} ({preset} preset)")
    if warning:
        console.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)


def read_image(path, where: str | None = None):
    """A user's image file as a NumPy array ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4, as
    imageio reads it (uint8, or uint16 for 16-bit PNGs).

    Raises:
        InputError: ``where`` (default: the path) names a missing or unreadable file, or one that
            holds several pictures or more than four channels.
    """
    import imageio.v3 as iio

    from pointillist_data.errors import InputError

    where = where or str(path)
    if not os.path.isfile(path):
        raise InputError(where, "image not found")
    try:
        img = iio.imread(path)
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(where, f"not a readable image ({type(e).__name__}: {e})") from None
    if img.ndim not in (2, 3) or (img.ndim == 3 and not 1 <= img.shape[-1] <= 4) or min(img.shape[:2]) < 1:
        raise InputError(where, f"expected one grey, grey+alpha, RGB or RGBA picture, got an array of shape "
                                f"{tuple(img.shape)} (an animation or a multi-page file?)")
    return img


def sub_app(**kwargs: Any) -> typer.Typer:
    """A command group whose commands also run inside :func:`domain_errors`."""
    return _App(no_args_is_help=True, pretty_exceptions_show_locals=False, **kwargs)


FLAME_OPT = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL",
                         help="FLAME model .pkl/.npz (FLAME 2020/2023). Default: the built-in demo head "
                              "(FLAME 2023 Open topology, 5143 vertices, 10144 faces).")
