"""Filter expressions over per-sample figures (``pointillist inspect --where``,
``SampleDataset.select(where=...)``): a small recursive-descent parser, no ``eval``.

Grammar (case-insensitive keywords)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | comparison
    comparison := NAME OP value          OP: >= <= > < == != =
    value      := NUMBER | 'text' | "text" | NAME (a bare word is text: split == train)

A comparison with an unknown figure (``None``: not recorded) is false, so ``psnr >= 28``
drops samples without a PSNR; ``not psnr >= 28`` keeps them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from .errors import InputError

__all__ = ["parse_where", "filter_rows"]

_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)|(?P<op>>=|<=|==|!=|>|<|=)"
                    r"|(?P<par>[()])|(?P<str>'[^']*'|\"[^\"]*\")|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*))")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
        "=": operator.eq, "!=": operator.ne}
Pred = Callable[[dict[str, Any]], bool]


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


def filter_rows(rows: list[dict[str, Any]], where: str | None = None, sort: str | None = None,
                fields: set[str] | None = None) -> list[dict[str, Any]]:
    """Rows matching ``where``, sorted by ``sort`` (``name`` ascending, ``-name`` descending;
    unknown values last).

    Raises:
        InputError: a bad expression, or ``sort`` naming an unknown field (``--sort``).
    """
    out = [r for r in rows if parse_where(where, fields)(r)] if where else list(rows)
    if sort:
        key, desc = sort.lstrip("-"), sort.startswith("-")
        if fields is not None and key not in fields:
            raise InputError("--sort", f"unknown field '{key}' (known: {', '.join(sorted(fields))})")
        known = [r for r in out if r.get(key) is not None]
        known.sort(key=lambda r: r[key], reverse=desc)
        out = known + [r for r in out if r.get(key) is None]
    return out
