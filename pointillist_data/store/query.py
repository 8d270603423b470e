"""Filter expressions over per-sample figures: one language and one field set
(:data:`FILTER_FIELDS`) for ``pointillist inspect --where``, ``SampleDataset(where=...)``,
``TokenWindowDataset(where=...)``, ``SupervisionDataset(where=...)`` and the trainers'
``--where``; a small recursive-descent parser, no ``eval``.

Grammar (case-insensitive keywords)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | comparison
    comparison := NAME OP value          OP: >= <= > < == != =
    value      := NUMBER | 'text' | "text" | NAME (a bare word is text: split == train)

A comparison with an unknown figure (``None``: not recorded) is false, so ``psnr >= 28``
drops samples without a PSNR; ``not psnr >= 28`` keeps them. A text field (``split``,
``subject_id``, ``landmark_source``) is compared with ``==`` / ``!=`` only; a number field
with a number only (``subject_id == 901`` compares the id's text with ``901``).

Errors name the field and the caller's own word for the option (``--where`` on the command
line, ``where=`` in Python).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from ..errors import InputError

__all__ = ["parse_where", "filter_rows", "where_fields", "FILTER_FIELDS", "sample_rows", "select_samples"]

_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)|(?P<op>>=|<=|==|!=|>|<|=)"
                    r"|(?P<par>[()])|(?P<str>'[^']*'|\"[^\"]*\")|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*))")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
        "=": operator.eq, "!=": operator.ne}
Pred = Callable[[dict[str, Any]], bool]


def _filter_fields() -> dict[str, tuple[str, str, str]]:
    from ..provenance import QUALITY_FIELDS, QUALITY_TEXT_FIELDS

    out = {"index": ("num", "", "position in the store"), "subject_id": ("text", "", "the sample's identity"),
           "split": ("text", "", "train, test or unassigned (the split manifest given to shard; train without one)")}
    out.update({k: ("num", u, d) for k, (u, d) in QUALITY_FIELDS.items()})
    out.update({k: ("text", u, d) for k, (u, d) in QUALITY_TEXT_FIELDS.items()})
    out.update({"faces_used": ("num", "", "FLAME faces with at least one point (read from the stored bindings)"),
                "max_per_face": ("num", "", "most points bound to one face (read from the stored bindings)")})
    return out


# name -> (kind "num" / "text", unit, meaning): every field a filter may name
FILTER_FIELDS: dict[str, tuple[str, str, str]] = _filter_fields()
_BINDING_FIELDS = ("faces_used", "max_per_face")  # computed from the stored bindings when asked


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InputError(where, f"cannot read '{text[pos:].strip()[:20]}' in '{text}'")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_where(text: str, fields: set[str] | None = None, where: str = "--where") -> Pred:
    """Compile ``text`` into a predicate over a row dict.

    Args:
        fields: the names a comparison may use (``None``: any).
        where: the option named in errors.

    Raises:
        InputError: a syntax error or an unknown field (naming the known ones).
    """
    toks = _tokens(text, where)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def word(v: str) -> bool:
        t = peek()
        return t is not None and t[0] == "name" and t[1].lower() == v

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise InputError(where, f"'{text}' ends too early")
        pos += 1
        return toks[pos - 1]

    def p_or() -> Pred:
        left = p_and()
        while word("or"):
            take()
            a, b = left, p_and()
            left = lambda r, a=a, b=b: a(r) or b(r)  # noqa: E731
        return left

    def p_and() -> Pred:
        left = p_not()
        while word("and"):
            take()
            a, b = left, p_not()
            left = lambda r, a=a, b=b: a(r) and b(r)  # noqa: E731
        return left

    def p_not() -> Pred:
        if word("not"):
            take()
            inner = p_not()
            return lambda r: not inner(r)
        t = peek()
        if t == ("par", "("):
            take()
            inner = p_or()
            if take() != ("par", ")"):
                raise InputError(where, f"missing ')' in '{text}'")
            return inner
        return p_cmp()

    def p_cmp() -> Pred:
        kind, name = take()
        if kind != "name":
            raise InputError(where, f"expected a field name, got '{name}' in '{text}'")
        if fields is not None and name not in fields:
            raise InputError(where, f"unknown field '{name}' (known: {', '.join(sorted(fields))})")
        kind, op = take()
        if kind != "op":
            raise InputError(where, f"expected a comparison (>= <= > < == !=) after '{name}', got '{op}'")
        kind, raw = take()
        if kind == "num":
            value: Any = float(raw)
        elif kind == "str":
            value = raw[1:-1]
        elif kind == "name":
            value = raw
        else:
            raise InputError(where, f"expected a value after '{name} {op}', got '{raw}'")
        fn = _OPS[op]
        kind_of = (FILTER_FIELDS.get(name) or ("",))[0] if fields is not None else ""
        if kind_of == "text" and op not in ("==", "=", "!="):
            raise InputError(where, f"'{name} {op} {raw}': {name} is text, compared with == or != only")
        if kind_of == "num" and not isinstance(value, float):
            raise InputError(where, f"'{name} {op} {raw}': {name} is a number, compared with a number")
        if kind_of == "text" and isinstance(value, float):
            value = raw  # an id written as a number (subject_id == 017) is its text

        def pred(r: dict[str, Any]) -> bool:
            v = r.get(name)
            if v is None:
                return False
            if isinstance(value, float):
                try:
                    return bool(fn(float(v), value))
                except (TypeError, ValueError):
                    return False
            if op not in ("==", "=", "!="):
                raise InputError(where, f"'{name} {op} {value}': order comparisons need a number")
            return bool(fn(str(v), value))

        return pred

    if not toks:
        raise InputError(where, "empty expression")
    pred = p_or()
    if pos != len(toks):
        raise InputError(where, f"unexpected '{toks[pos][1]}' in '{text}'")
    return pred


def where_fields(text: str | None, option: str = "--where") -> set[str]:
    """The field names an expression compares (to compute only those that are costly).

    Raises:
        InputError: an expression that cannot be read (naming ``option``).
    """
    if not text:
        return set()
    toks = _tokens(text, option)
    return {t[1] for k, t in enumerate(toks[:-1]) if t[0] == "name" and toks[k + 1][0] == "op"}


def filter_rows(rows: list[dict[str, Any]], where: str | None = None, sort: str | None = None,
                fields: set[str] | None = None, option: str = "--where") -> list[dict[str, Any]]:
    """Rows matching ``where``, sorted by ``sort`` (``name`` ascending, ``-name`` descending;
    unknown values last).

    Args:
        option: the caller's word for the filter, named in errors (``--where``, ``where=``);
            a sort error names ``--sort`` or ``sort=`` alike.

    Raises:
        InputError: a bad expression, or ``sort`` naming an unknown field.
    """
    out = [r for r in rows if parse_where(where, fields, option)(r)] if where else list(rows)
    if sort:
        key, desc = sort.lstrip("-"), sort.startswith("-")
        if fields is not None and key not in fields:
            raise InputError("sort=" if option.endswith("=") else "--sort",
                             f"unknown field '{key}' (known: {', '.join(sorted(fields))})")
        known = [r for r in out if r.get(key) is not None]
        known.sort(key=lambda r: r[key], reverse=desc)
        out = known + [r for r in out if r.get(key) is None]
    return out


def sample_rows(store: Any, need: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per committed sample of a :class:`~pointillist_data.store.token_store.TokenStore` holding
    every :data:`FILTER_FIELDS` field (``None`` where not recorded): the manifest's figures
    (:meth:`TokenStore.quality_table`), and ``faces_used`` / ``max_per_face`` counted from the
    stored bindings when ``need`` names them (``None``: always; they read every binding)."""
    rows = store.quality_table()
    if need is None or any(f in need for f in _BINDING_FIELDS):
        import numpy as np

        for i, r in enumerate(rows):
            n, s = int(store.point_count[i]), int(store.point_offsets[i])
            counts = np.bincount(np.asarray(store.read("binding", s, s + n)), minlength=store.vocab.num_faces)
            r.update(faces_used=int((counts > 0).sum()), max_per_face=int(counts.max()) if n else 0)
    else:
        for r in rows:
            r.update(faces_used=None, max_per_face=None)
    return rows


def select_samples(store: Any, split: str | None = None, where: str | None = None, option: str = "where=",
                   sort: str | None = None, indices: Any = None, need_all: bool = False) -> list[dict[str, Any]]:
    """The rows (:func:`sample_rows`) of the samples whose ``split`` is ``split`` (``None`` or
    ``"all"``: every split) and that match ``where``, in store order (or sorted by ``sort``);
    ``indices`` limits them to those store positions first. ``need_all``: fill every field
    (else the binding counts only when ``where`` / ``sort`` name them).

    Raises:
        InputError: a bad expression or an unknown field (naming ``option``).
    """
    need = None if need_all else where_fields(where, option) | ({sort.lstrip("-")} if sort else set())
    rows = sample_rows(store, need)
    if indices is not None:
        rows = [rows[int(i)] for i in indices]
    if split is not None and split != "all":
        rows = [r for r in rows if r["split"] == split]
    return filter_rows(rows, where, sort, set(FILTER_FIELDS), option)
