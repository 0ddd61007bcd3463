"""Ganeti's query language for ``-F``: text → filter list.

Layer: CLI (pure). Grammar (as in ``gnt-instance list -F``)::

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | cmp
    cmp    := FIELD op VALUE | VALUE "in" FIELD | FIELD
    op     := == | != | < | > | <= | >= | =~

Values are quoted strings, numbers, ``true``/``false``, or ``m/regex/`` for
``=~``. A bare field tests truth. Produces Ganeti's list form, e.g.
``["&", ["=", "pnode", "node1"], ["?", "admin_up"]]``.
"""

from __future__ import annotations

import re

from corral.errors import ParameterError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<re>m(?P<d>[/|!#])(?P<rebody>.*?)(?P=d)(?P<reflags>i?))
    | (?P<op>==|!=|<=|>=|=~|<|>|\(|\))
    | (?P<num>-?\d+(?:\.\d+)?(?![\w./-]))
    | (?P<word>[A-Za-z_][\w./-]*)
    )""",
    re.VERBOSE,
)

_OPS = {"==": "=", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "=~": "=~"}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ParameterError("filter", f"cannot parse filter at {text[pos:]!r}")
        pos = m.end()
        if m.group("str"):
            raw = m.group("str")[1:-1]
            out.append(("val", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("re") is not None:
            flags = "(?i)" if m.group("reflags") else ""  # Ganeti: m/x/i is case-insensitive
            out.append(("val", flags + m.group("rebody")))
        elif m.group("op"):
            out.append(("op", m.group("op")))
        elif m.group("num"):
            n = m.group("num")
            out.append(("val", float(n) if "." in n else int(n)))
        elif m.group("word"):
            w = m.group("word")
            if w in ("and", "or", "not", "in"):
                out.append(("kw", w))
            elif w in ("true", "false"):
                out.append(("val", w == "true"))
            else:
                out.append(("word", w))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise ParameterError("filter", "unexpected end of filter")
        self.i += 1
        return tok

    def parse(self) -> Any:
        e = self.expr()
        if self.peek() is not None:
            raise ParameterError("filter", f"unexpected {self.peek()[1]!r} in filter")  # type: ignore[index]
        return e

    def expr(self) -> Any:
        parts = [self.term()]
        while self.peek() == ("kw", "or"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else ["|", *parts]

    def term(self) -> Any:
        parts = [self.factor()]
        while self.peek() == ("kw", "and"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else ["&", *parts]

    def factor(self) -> Any:
        tok = self.take()
        if tok == ("kw", "not"):
            return ["!", self.factor()]
        if tok == ("op", "("):
            e = self.expr()
            if self.take() != ("op", ")"):
                raise ParameterError("filter", "missing ')'")
            return e
        if tok[0] == "val":
            if self.take() != ("kw", "in"):
                raise ParameterError("filter", f"expected 'in' after {tok[1]!r}")
            field = self.take()
            if field[0] != "word":
                raise ParameterError("filter", "expected a field name after 'in'")
            return ["=[]", field[1], tok[1]]
        if tok[0] != "word":
            raise ParameterError("filter", f"unexpected {tok[1]!r}")
        nxt = self.peek()
        if nxt is not None and nxt[0] == "op" and nxt[1] in _OPS:
            self.take()
            value = self.take()
            if value[0] == "word":  # bare words are string values
                value = ("val", value[1])
            if value[0] != "val":
                raise ParameterError("filter", f"expected a value after {nxt[1]}")
            return [_OPS[nxt[1]], tok[1], value[1]]
        return ["?", tok[1]]


def parse(text: str) -> Any:
    """Parse ``-F`` text into a Ganeti filter list."""
    if not text.strip():
        raise ParameterError("filter", "empty filter")
    return _Parser(text).parse()


def names_filter(names: list[str]) -> Any:
    return ["|", *(["=", "name", n] for n in names)]
