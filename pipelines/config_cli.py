"""Command-line options generated from a job's config dataclass (VHAP's style: every field a flag).

A command decorated with :func:`config_command` receives one resolved config object instead of
options copied by hand. Every field of the dataclass (and of dataclasses nested in it, as
dotted flags such as ``--fitting.iterations``) becomes an option whose help is the field's entry
in the class's ``Attributes:`` docstring section; ``--config FILE`` reads a JSON object of the
same fields (nested ones as nested objects), and ``--print-config`` writes the resolved config
as JSON (a file to start from) and exits. One precedence rule for every command::

    field defaults  <  preset (when the command has one)  <  --config FILE  <  explicit flags

Errors name the user's flag (``--iterations``), not the dataclass field.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from pointillist_data.errors import ConfigError

__all__ = ["field_help", "ConfigFlag", "config_flags", "resolve_config", "config_command", "own_fields",
           "CONFIG_COMMANDS"]

#: command name -> its config dataclass, for every command built by :func:`config_command`
CONFIG_COMMANDS: dict[str, type] = {}

_ATTR_LINE = re.compile(r"^(\s*)([A-Za-z_][\w, ]*?):\s*(.*)$")


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, from the ``Attributes:`` sections of ``cls`` and its bases.

    Entries may name several fields (``densify_from, densify_until: ...``) and continue on
    more-indented lines; a subclass's entry wins over its base's.
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        lines = doc.splitlines()
        try:
            start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
        except StopIteration:
            continue
        names: list[str] = []
        own: dict[str, str] = {}
        base_indent = None
        pending = ""  # a list of names wrapped before its colon ("a, b,\n    c: text")
        for ln in lines[start + 1:]:
            if not ln.strip():
                continue
            indent = len(ln) - len(ln.lstrip())
            if base_indent is None:
                base_indent = indent
            if indent < base_indent:
                break
            if pending:
                ln, indent, pending = " " * base_indent + pending + ln.strip(), base_indent, ""
            m = _ATTR_LINE.match(ln)
            if indent == base_indent and not m and ln.rstrip().endswith(","):
                pending = ln.strip() + " "
                continue
            if indent == base_indent and m:
                names = [n.strip() for n in m.group(2).split(",") if n.strip()]
                for n in names:
                    own[n] = m.group(3).strip()
            elif names:
                for n in names:
                    own[n] = f"{own[n]} {ln.strip()}".strip()
        for n, text in own.items():
            # an entry that refers to another class ("see :class:`Base`") keeps the base's own words
            if not (n in out and re.search(r"\bsee :class:", text)):
                out[n] = text
    return {n: _plain(t) for n, t in out.items()}


def _plain(text: str) -> str:
    """Docstring markup as terminal help: ``code`` and :role:`~pkg.Name` become `code` and `Name`."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"`\1`", text)
    return text.replace("``", "`")


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """One generated option.

    Attributes:
        path: the field's path in the config (``("fitting", "iterations")``).
        flag: the option as typed (``--fitting.iterations``).
        param: the Python parameter name of the command (``fitting__iterations``).
        kind: ``bool``, ``int``, ``float``, ``str``, ``list`` (comma-separated), ``json``
            (a JSON value) or ``choice``.
        choices: the allowed values of a ``choice`` (an :class:`enum.Enum` field or a
            ``Literal``).
        default: the field's default (shown in the help).
        help: the field's docstring entry.
        item: element type of a ``list`` (int, float or str).
        required: the field has no default (give the flag, or the field in ``--config``).
        inherited: the field is declared by a base class (listed after the class's own).
        aliases: further names of the option (field metadata ``aliases``, e.g. ``--sequence``
            beside ``--sequences``); errors name ``flag``.
        override: the field belongs to a dict of another config's fields that override a
            preset (``PipelineConfig.tracking``: ``--tracking.frame-iters``); unset, the
            preset decides, so no default is shown.
    """

    path: tuple[str, ...]
    flag: str
    param: str
    kind: str
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    item: type = str
    required: bool = False
    inherited: bool = False
    override: bool = False
    aliases: tuple[str, ...] = ()


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return tp


def _kind(tp: Any) -> tuple[str, tuple[str, ...], type]:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return "bool", (), str
    if tp in (int, float, str):
        return tp.__name__, (), str
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "choice", tuple(str(m.value) for m in tp), str
    if origin is typing.Literal:
        return "choice", tuple(str(a) for a in typing.get_args(tp)), str
    if origin in (list, tuple) and all(a in (int, float, str, Ellipsis) for a in typing.get_args(tp)):
        items = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return "list", (), (items[0] if items and len(set(items)) == 1 else str)
    if tp is Path:
        return "str", (), str
    return "json", (), str


def config_flags(cls: type, prefix: tuple[str, ...] = (), exclude: frozenset[str] = frozenset()) -> list[ConfigFlag]:
    """The options of config dataclass ``cls``: one per field, nested dataclasses flattened
    into dotted flags; ``exclude`` names fields of ``cls`` the command sets itself.

    Field metadata refines a flag: ``choices`` (a closed set of a ``str`` field), ``cli_kind``
    (parse the flag as another kind, e.g. ``"str"`` for a scale written ``1/4`` that
    ``__post_init__`` converts) and ``overrides`` (a ``dict`` field holding fields of that
    config class, each a dotted flag: ``--tracking.frame-iters``; with ``fixed``, the names of
    that class's fields the command sets itself, which get no flag) and ``aliases`` (further
    option names, kept from a hand-written command)."""
    hints = typing.get_type_hints(cls)
    docs = field_help(cls)
    own = set(cls.__dict__.get("__annotations__", {}))
    flags: list[ConfigFlag] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude:
            continue
        tp = _strip_optional(hints[f.name])
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(tp):
            flags += config_flags(tp, path)
            continue
        if "overrides" in f.metadata:  # a dict of another config's fields, set over a preset
            fixed = frozenset(f.metadata.get("fixed", ()))  # fields the command sets itself: no flag
            flags += [dataclasses.replace(fl, default=None, override=True, required=False, inherited=f.name not in own)
                      for fl in config_flags(f.metadata["overrides"], path, fixed)]
            continue
        kind, choices, item = _kind(hints[f.name])
        kind = f.metadata.get("cli_kind", kind)  # e.g. "str" for a scale given as 1/4
        choices = tuple(f.metadata.get("choices", choices))
        if choices and kind in ("str", "choice"):
            kind = "choice"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if isinstance(default, enum.Enum):
            default = default.value
        name = ".".join(p.replace("_", "-") for p in path)
        flags.append(ConfigFlag(path, f"--{name}", "__".join(path), kind, choices, default,
                                docs.get(f.name, ""), item, required, f.name not in own,
                                aliases=tuple(f.metadata.get("aliases", ()))))
    # required fields first, then the class's own, then those of its bases (stable otherwise)
    return sorted(flags, key=lambda fl: (not fl.required, fl.inherited))


def _parse(flag: ConfigFlag, raw: Any) -> Any:
    if flag.kind == "bool":
        return bool(raw)
    if flag.kind == "list":
        parts = [p.strip() for p in str(raw).split(",") if p.strip()]
        try:
            return [flag.item(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{flag.flag}: '{raw}' is not a comma-separated list of "
                              f"{flag.item.__name__} values") from None
    if flag.kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw  # a plain word (e.g. 'auto' of an int | str field)
    if flag.kind == "choice":
        return raw.value if isinstance(raw, enum.Enum) else raw
    return raw


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(cls: type, values: dict, where: str, flags_by_path: dict[tuple[str, ...], str], prefix=()) -> Any:
    """``cls`` from nested ``values``; errors name the flag of an offending field when a flag set it."""
    from pointillist_data.fileio import build_config

    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in values.items():
        tp = _strip_optional(hints.get(k, object))
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            kw[k] = _build(tp, v, where, flags_by_path, (*prefix, k))
        else:
            kw[k] = v
    try:
        return build_config(cls, kw, where)
    except ConfigError as e:
        # "options: max_points / min_points: need ..." -> "--max-points / --min-points: need ...":
        # the fields the error names first (its subject) become the flags that set them
        msg = str(e).removeprefix(f"{where}: ")
        subject, sep, rest = msg.partition(": ")
        names = [n.strip() for n in re.split(r" / |, ", subject)] if sep else []
        flags = {p[-1]: f for p, f in flags_by_path.items() if p[:-1] == prefix}
        # "'tracking': TrackingConfig.frame_iters must be ..." -> "--tracking.frame-iters: ..."
        inner = {p[-1]: f for p, f in flags_by_path.items() if p[:-1] == (*prefix, subject.strip("'"))}
        hit = [f for n, f in inner.items() if re.search(rf"\b{re.escape(n)}\b", rest)]
        if sep and hit:
            raise ConfigError(" / ".join(hit) + f": {rest}") from None
        if names and any(n in flags for n in names):
            raise ConfigError(" / ".join(flags.get(n, n) for n in names) + f": {rest}") from None
        if names and where == "options" and set(names) <= {f.name for f in dataclasses.fields(cls)}:
            # no file: the fields the error names were set by their flags, a preset or defaults
            raise ConfigError(" / ".join("--" + ".".join(s.replace("_", "-") for s in (*prefix, n)) for n in names)
                              + f": {rest}") from None
        named = [f for n, f in flags.items() if re.search(rf"\b{re.escape(n)}\b", msg)]
        if named and not names:  # no subject: prefix the flags the message mentions
            raise ConfigError(" / ".join(named) + f": {msg}") from None
        if where == "options" and subject.startswith("--"):  # the config already names its option
            raise ConfigError(msg) from None
        if where != "options" and not str(e).startswith(f"{where}: "):  # raised inside: name the file
            raise ConfigError(f"{where}: {msg}") from None
        raise


def resolve_config(cls: type, explicit: dict[tuple[str, ...], Any], config_file: str | Path | None = None,
                   preset: dict | None = None, fixed: dict | None = None) -> Any:
    """The config of one invocation: field defaults < ``preset`` < ``config_file`` (JSON object)
    < ``explicit`` flag values (keyed by field path) < ``fixed`` (values the command sets itself).

    Raises:
        ConfigError: unreadable file, unknown field, or a value the dataclass refuses (naming
            the flag that set it, or the file).
    """
    from pointillist_data.fileio import read_json_object

    values = dict(preset or {})
    if config_file is not None:
        values = _merge(values, read_json_object(config_file))
    tree: dict = {}
    for path, v in explicit.items():
        _set(tree, path, v)
    values = _merge(_merge(values, tree), fixed or {})
    flags_by_path = {p: "--" + ".".join(s.replace("_", "-") for s in p) for p in explicit}
    where = str(config_file) if config_file is not None else "options"
    return _build(cls, values, where, flags_by_path)


def _option(flag: ConfigFlag, panel: str) -> tuple[Any, Any]:
    shown: str | bool = "the preset's" if flag.override else False if flag.required else "none" if flag.default is None else (
        ",".join(map(str, flag.default)) if isinstance(flag.default, list | tuple) else str(flag.default))
    help_ = (flag.help or flag.path[-1].replace("_", " ")) + (" [required, or in --config]" if flag.required else "")
    if flag.kind == "bool":
        decl = f"{flag.flag}/--no-{flag.flag[2:]}"
        return bool | None, typer.Option(None, decl, help=help_, show_default=shown, rich_help_panel=panel)
    if flag.kind == "choice":
        enum_type = enum.Enum(f"{flag.param}_choices", {c: c for c in flag.choices}, type=str)
        return enum_type | None, typer.Option(None, flag.flag, *flag.aliases, help=help_, show_default=shown,
                                              rich_help_panel=panel, case_sensitive=False)
    tp = {"int": int, "float": float}.get(flag.kind, str)
    extra = {"list": " (comma-separated)", "json": " (JSON value)"}.get(flag.kind, "")
    return tp | None, typer.Option(None, flag.flag, *flag.aliases, help=help_ + extra, show_default=shown,
                                   rich_help_panel=panel,
                                   metavar={"int": "INT", "float": "FLOAT"}.get(flag.kind, "TEXT"))


def _preset(presets: Callable[..., dict] | None, explicit: dict[tuple[str, ...], Any], config_file: Path | None,
            own: dict[str, Any]) -> dict | None:
    """The preset of one invocation (see :func:`config_command`)."""
    if presets is None:
        return None
    if not inspect.signature(presets).parameters:
        return presets()
    from pointillist_data.fileio import read_json_object

    requested = read_json_object(config_file) if config_file is not None else {}
    tree: dict = {}
    for path, v in explicit.items():
        _set(tree, path, v)
    return presets(_merge(requested, tree), **own)


def own_fields(*names: str) -> Callable[..., dict]:
    """A ``fields_from`` for :func:`config_command`: the command's own options (or arguments)
    ``names`` as the config fields of the same names. A path becomes its string; an unset
    option or an off flag (``None`` / ``False``) sets nothing, so ``--config`` keeps its value."""

    def fields_from(**own: Any) -> dict:
        return {n: str(own[n]) if isinstance(own[n], Path) else own[n] for n in names
                if own.get(n) is not None and own[n] is not False}

    return fields_from


def config_values(cfg: Any) -> Any:
    """The inputs of a config dataclass as JSON-ready values, nested configs as objects: its
    ``init`` fields only, since derived fields (``field(init=False)``) are not accepted back by
    ``--config`` (so ``--print-config`` output always round-trips)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_values(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, (list, tuple)):
        return [config_values(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_values(v) for k, v in cfg.items()}
    return cfg


def config_command(app: typer.Typer, name: str, cls: type, *, exclude: tuple[str, ...] = (),
                   presets: Callable[..., dict] | None = None, panel: str | None = None,
                   fields_from: Callable[..., dict] | None = None, **command_kw):
    """Register ``func(cfg, **own_options)`` as command ``name`` with one option per field of ``cls``.

    The decorated function keeps its own typer options (inputs and outputs, what the config
    does not hold) and receives ``cfg``, the :func:`resolve_config` result. ``--config FILE`` and
    ``--print-config`` are added; ``presets()`` returns the preset dict the file and the flags
    override. A preset that depends on what was asked (a device's budget) takes arguments:
    ``presets(requested, **own_options)``, ``requested`` being the ``--config`` file's values
    with the explicit flags over them (nested dicts), so the preset composes exactly like the
    others: defaults < preset < file < flags. ``exclude`` names top-level fields that get no flag: set
    through ``--config``, left at their default, or taken from the command's own options by
    ``fields_from(**own_options) -> {field: value}`` (e.g. the first of a repeatable option), which
    count as explicit flags.
    """
    flags = config_flags(cls, exclude=frozenset(exclude))
    panel = panel or f"{cls.__name__} (also in --config FILE)"
    CONFIG_COMMANDS[name] = cls

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func, eval_str=True)
        own_params = [p for p in own.parameters.values() if p.name != "cfg"]
        clash = {p.name for p in own_params} & {f.param for f in flags}
        if clash:
            raise TypeError(f"{func.__name__}: own options {sorted(clash)} clash with {cls.__name__} fields")
        params = list(own_params)
        annotations = {p.name: p.annotation for p in own_params}
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                                        default=typer.Option(None, "--config", help=f"{cls.__name__} JSON: its "
                                                             "fields override the defaults, explicit flags "
                                                             "override it.", rich_help_panel=panel)))
        params.append(inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, "--print-config", help="Print the resolved "
                                                             "config as JSON and exit (a file for --config).",
                                                             rich_help_panel=panel)))
        annotations.update(config=Path | None, print_config=bool)
        for f in flags:
            tp, opt = _option(f, panel)
            params.append(inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, annotation=tp, default=opt))
            annotations[f.param] = tp

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            explicit = {f.path: _parse(f, kwargs.pop(f.param)) for f in flags if kwargs.get(f.param) is not None}
            for f in flags:
                kwargs.pop(f.param, None)
            config, print_config = kwargs.pop("config"), kwargs.pop("print_config")
            if fields_from is not None:
                explicit.update({(k,): v for k, v in fields_from(**kwargs).items() if v is not None})
            cfg = resolve_config(cls, explicit, config, _preset(presets, explicit, config, kwargs))
            if print_config:
                typer.echo(json.dumps(config_values(cfg), indent=1, default=str))
                raise typer.Exit(0)
            return func(cfg, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = annotations
        del command.__wrapped__  # typer reads the signature above, not the wrapped function's
        app.command(name, **command_kw)(command)
        return command

    return decorate
