"""Filter expressions in containerd's syntax (containerd v1.7 ``filters`` package).

containerd's List-style RPCs take ``filters``: a list of strings, each a small
boolean expression over the fields of the listed objects.  This module parses
those strings and evaluates them against objects through an :class:`Adaptor`.

Syntax
======

A filter string is one or more *selectors* joined by ``,``; every selector
must hold for the filter to match (logical AND)::

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := [A-Za-z0-9_]+ | "double-quoted string"
    operator  := "==" | "!=" | "~="
    value     := bare | "double-quoted string"
                 (after "~=" also /slash-quoted/ or |pipe-quoted|)
    bare      := any run of printable characters without whitespace or ",",
                 not starting with one of . , " / | = ! ~

Selectors:

``name==foo``
    the field ``name`` is present and equals ``foo``.
``name!=foo``
    the field's value differs from ``foo``.  A missing field counts as the
    empty string, so it matches (as in containerd).
``name~=^foo[0-9]+``
    the field's value contains a match of the regular expression (Go
    ``regexp.MatchString``: unanchored search; a missing field is tested
    as the empty string).
``labels.foo``
    no operator: the field is present.

Field paths are dot separated.  A component that is not a plain identifier
(label keys such as ``com.example/x`` or ``my-label``) must be quoted with
double quotes: ``labels."com.example/x"==y``.  Unquoted dots also reach into
label maps because adaptors join the rest of the path with ``.`` (containerd's
``checkMap``), so ``labels.com.example.key`` and ``labels."com.example.key"``
are equivalent; ``/`` and ``-`` however always need quoting.

Quoted strings use Go string-literal escapes: ``\\a \\b \\f \\n \\r \\t \\v \\\\``,
``\\xHH`` (a byte), ``\\ooo`` (octal byte), ``\\uHHHH``, ``\\UHHHHHHHH`` and
the escaped quote character itself.  Regular-expression values may also be
quoted with ``/.../`` or ``|...|`` so that ``,`` and spaces can appear
unescaped: ``name~=/[abc]{1,2}/``.  Escapes are still decoded inside these, so
regex escapes such as ``\\d`` are illegal inside quotes; write them in a bare
value (``name~=^v\\d+``) or double the backslash (``name~="^v\\\\d+"``).

Whitespace between tokens is ignored, e.g.
``type==io.containerd.snapshotter.v1, id==overlayfs``.

Several filter strings (the repeated ``filters`` field of an RPC) are combined
with OR by :func:`parse_all`; an empty list, and any empty string in it, match
everything.

Examples::

    >>> f = parse('name==redis,labels."com.example/tier"==cache')
    >>> f.match(FieldsAdaptor({"name": "redis",
    ...                        "labels": {"com.example/tier": "cache"}}))
    True
    >>> parse_all(["name==a", "name==b"]).match(FieldsAdaptor({"name": "b"}))
    True
    >>> parse("name==")
    Traceback (most recent call last):
    ...
    shared.filters.FilterSyntaxError: filters: parse error: [name==]: expected value or quoted

Regular expressions
===================

Go's RE2 dialect is approximated on top of :mod:`re` (see
:func:`compile_regexp`): ``\\d \\w \\s \\b`` are ASCII-only, ``$`` without
``(?m)`` matches only at the very end, ``\\z``, ``\\Q...\\E``, POSIX classes
(``[[:alpha:]]``), ``(?<name>...)`` and flag groups such as ``(?i)`` anywhere
in the pattern are supported; constructs RE2 rejects (look-around,
back-references, possessive quantifiers) are rejected.  Not supported:
Unicode classes ``\\p{...}``, negated POSIX classes and the ``U`` flag, and
``(?i)`` folds ASCII letters only.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn, Protocol, TypeAlias

from shared.errors import InvalidArgument

__all__ = [
    "ALWAYS",
    "Adaptor",
    "AdaptorFunc",
    "AllFilter",
    "AlwaysFilter",
    "AnyFilter",
    "FieldValue",
    "FieldsAdaptor",
    "Filter",
    "FilterSyntaxError",
    "Operator",
    "Selector",
    "compile_regexp",
    "parse",
    "parse_all",
]


# ---------------------------------------------------------------------------
# Adaptors and filters
# ---------------------------------------------------------------------------


class Adaptor(Protocol):
    """Maps a field path of some object to ``(value, present)``."""

    def field(self, path: Sequence[str]) -> tuple[str, bool]: ...


class Filter(Protocol):
    """Anything that can decide whether an adapted object matches."""

    def match(self, adaptor: Adaptor) -> bool: ...


class AdaptorFunc:
    """Adaptor built from a plain function (containerd's ``AdapterFunc``)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Sequence[str]], tuple[str, bool]]) -> None:
        self._fn = fn

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        return self._fn(path)


FieldValue: TypeAlias = "str | Mapping[str, FieldValue] | None"


class FieldsAdaptor:
    """Adaptor over a nested mapping, following containerd's metadata adaptors.

    ``FieldsAdaptor({"id": "c1", "labels": {"a.b": "x"}})``:

    * A path is walked through nested mappings one component at a time.  At
      the first component that does not name a nested mapping, the remaining
      components are joined with ``.`` and looked up as one key, just as
      containerd's ``checkMap`` does for ``labels``: ``("labels", "a", "b")``
      and ``("labels", "a.b")`` both give ``("x", True)``.
    * A key that is absent or maps to ``None`` gives ``("", False)``; an empty
      mapping never has fields.  A string value is present even when it is
      empty, like a label with an empty value.  containerd's adaptors treat
      some scalar fields (``id``, ``name``, ``image``...) as absent when they
      are empty; to get that behaviour, leave such keys out or set them to
      ``None``.
    * A path that stops at a mapping (``("labels",)``) gives ``("", False)``:
      containerd's ``checkMap`` looks up the empty key, which no valid label
      has.  So a bare ``labels`` selector never matches, as in containerd.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, FieldValue]) -> None:
        self._fields = fields

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        node = self._fields
        depth = 0
        while depth < len(path):
            child = node.get(path[depth])
            if not isinstance(child, Mapping):
                break
            node = child
            depth += 1
        if not node:
            return "", False
        value = node.get(".".join(path[depth:]))
        if value is None or isinstance(value, Mapping):
            return "", False
        return value, True


class AlwaysFilter:
    """Matches everything (containerd's ``filters.Always``)."""

    __slots__ = ()

    def match(self, adaptor: Adaptor) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS: Final = AlwaysFilter()


@dataclass(frozen=True, slots=True)
class AnyFilter:
    """Matches when any of its filters matches (logical OR)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)


@dataclass(frozen=True, slots=True)
class AllFilter:
    """Matches when all of its filters match (logical AND)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return all(f.match(adaptor) for f in self.filters)


class Operator(enum.Enum):
    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


@dataclass(frozen=True, slots=True)
class Selector:
    """One ``fieldpath[operator value]`` term.

    ``pattern`` is compiled from ``value`` for :attr:`Operator.MATCHES` when
    not given; constructing such a selector with an invalid expression raises
    :class:`ValueError`.
    """

    fieldpath: tuple[str, ...]
    operator: Operator
    value: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.operator is Operator.MATCHES and self.pattern is None:
            object.__setattr__(self, "pattern", compile_regexp(self.value))

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor.field(self.fieldpath)
        if self.operator is Operator.PRESENT:
            return present
        if self.operator is Operator.EQUAL:
            return present and value == self.value
        if self.operator is Operator.NOT_EQUAL:
            return value != self.value
        assert self.pattern is not None
        return self.pattern.search(value) is not None


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class FilterSyntaxError(InvalidArgument, ValueError):
    """A filter string could not be parsed.

    ``str(err)`` follows containerd's format, marking the offending character:
    ``filters: parse error: [labels. >|?|< x]: expected field or quoted``.
    ``position`` is the index of that character in ``expression`` (equal to
    ``len(expression)`` when the input ended too early).
    """

    def __init__(self, expression: str, position: int, reason: str) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        if position < len(expression):
            where = (
                f"[{expression[:position]} >|{expression[position]}|< {expression[position + 1 :]}]"
            )
        else:
            where = f"[{expression}]"
        super().__init__(f"filters: parse error: {where}: {reason}")


# ---------------------------------------------------------------------------
# Scanner
# ---------------------------------------------------------------------------


class _Kind(enum.Enum):
    FIELD = "field"
    VALUE = "value"
    QUOTED = "quoted"
    SEPARATOR = "separator"
    OPERATOR = "operator"
    ILLEGAL = "illegal"
    CHAR = "char"
    EOF = "EOF"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    pos: int
    text: str
    error: str = ""


_QUOTES: Final = frozenset('"/|')
_SEPARATORS: Final = frozenset(",.")
_OPERATOR_CHARS: Final = frozenset("=!~")
_FIELD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SIMPLE_ESCAPES: Final = frozenset("abfnrtv\\")
_OCTAL: Final = frozenset("01234567")
# str.isspace() but without the ASCII information separators, which Go's
# unicode.IsSpace does not count as space.
_NOT_GO_SPACE: Final = frozenset("\x1c\x1d\x1e\x1f")


def _is_space(ch: str) -> bool:
    return ch.isspace() and ch not in _NOT_GO_SPACE


def _is_value_char(ch: str) -> bool:
    # Go: letter, digit, number, graphic or punctuation; never "," or space.
    return ch != "," and not _is_space(ch) and unicodedata.category(ch)[0] in "LMNPS"


def _digit_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "a" <= ch <= "f":
        return ord(ch) - ord("a") + 10
    if "A" <= ch <= "F":
        return ord(ch) - ord("A") + 10
    return 16


def _scan_digits(text: str, i: int, base: int, count: int) -> tuple[int, str]:
    while count > 0 and i < len(text) and _digit_value(text[i]) < base:
        i += 1
        count -= 1
    return i, ("illegal numeric escape sequence" if count else "")


def _scan_escape(text: str, i: int, quote: str) -> tuple[int, str]:
    """Validate the escape whose backslash precedes ``text[i]``."""
    if i >= len(text):
        return i, "illegal escape sequence"
    ch = text[i]
    if ch in _SIMPLE_ESCAPES or ch == quote:
        return i + 1, ""
    if ch in _OCTAL:
        return _scan_digits(text, i, 8, 3)
    widths = {"x": 2, "u": 4, "U": 8}
    if ch in widths:
        return _scan_digits(text, i + 1, 16, widths[ch])
    # The offending character is re-examined by the caller, as in containerd.
    return i, "illegal escape sequence"


def _scan_quoted(text: str, start: int) -> tuple[int, str]:
    """Scan a quoted literal; return its end and an error ("" if valid)."""
    quote = text[start]
    error = ""
    i = start + 1
    while True:
        if i >= len(text):
            return i, error or "quoted literal not terminated"
        ch = text[i]
        if ch == quote:
            return i + 1, error
        if ch == "\n":
            return i + 1, error or "quoted literal not terminated"
        if ch == "\x00":
            return i + 1, error or "unexpected null"
        if ch == "\\":
            i, problem = _scan_escape(text, i + 1, quote)
            error = error or problem
        else:
            i += 1


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens, skipping whitespace between them.

    After an operator the scanner is in "value" mode: the next token that is
    not a quote, separator or operator is a bare value, which may contain
    any printable character but "," and whitespace.
    """
    tokens: list[_Token] = []
    value_mode = False
    i = 0
    n = len(text)
    while True:
        while i < n and _is_space(text[i]):
            i += 1
        if i >= n:
            tokens.append(_Token(_Kind.EOF, n, ""))
            return tokens
        ch = text[i]
        start = i
        if ch == "\x00":
            tokens.append(_Token(_Kind.ILLEGAL, i, ch, "unexpected null"))
            i += 1
        elif ch in _QUOTES:
            i, error = _scan_quoted(text, i)
            kind = _Kind.ILLEGAL if error else _Kind.QUOTED
            tokens.append(_Token(kind, start, text[start:i], error))
        elif ch in _SEPARATORS:
            value_mode = False
            tokens.append(_Token(_Kind.SEPARATOR, i, ch))
            i += 1
        elif ch in _OPERATOR_CHARS:
            while i < n and text[i] in _OPERATOR_CHARS:
                i += 1
            value_mode = True
            tokens.append(_Token(_Kind.OPERATOR, start, text[start:i]))
        elif value_mode:
            i += 1
            while i < n and _is_value_char(text[i]):
                i += 1
            value_mode = False
            tokens.append(_Token(_Kind.VALUE, start, text[start:i]))
        elif ch in _FIELD_CHARS:
            while i < n and text[i] in _FIELD_CHARS:
                i += 1
            tokens.append(_Token(_Kind.FIELD, start, text[start:i]))
        else:
            tokens.append(_Token(_Kind.CHAR, i, ch))
            i += 1


# ---------------------------------------------------------------------------
# Unquoting (Go string literal rules, plus "/" and "|" as quote characters)
# ---------------------------------------------------------------------------


class _QuoteError(ValueError):
    pass


_CONTROL_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def _hex_digits(body: str, i: int, count: int) -> int:
    digits = body[i : i + count]
    if len(digits) != count or any(_digit_value(d) >= 16 for d in digits):
        raise _QuoteError("quote syntax error")
    return int(digits, 16)


def _unquote(literal: str) -> str:
    """Decode a scanned quoted literal.

    ``\\x`` and octal escapes denote single bytes, as in Go; runs of them are
    decoded as UTF-8 and bytes that do not form valid UTF-8 are kept as lone
    surrogates (``surrogateescape``), so they never equal real text.
    """
    quote, body = literal[0], literal[1:-1]
    if "\\" not in body and quote not in body:
        return body
    pieces: list[str] = []
    pending = bytearray()

    def flush() -> None:
        if pending:
            pieces.append(pending.decode("utf-8", "surrogateescape"))
            pending.clear()

    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote or ch == "\n":
            raise _QuoteError("quote syntax error")
        if ch != "\\":
            flush()
            pieces.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise _QuoteError("quote syntax error")
        esc = body[i + 1]
        i += 2
        if esc in _CONTROL_ESCAPES:
            flush()
            pieces.append(_CONTROL_ESCAPES[esc])
        elif esc == "x":
            pending.append(_hex_digits(body, i, 2))
            i += 2
        elif esc in ("u", "U"):
            width = 4 if esc == "u" else 8
            code = _hex_digits(body, i, width)
            i += width
            if code > 0x10FFFF:
                raise _QuoteError("quote syntax error")
            if 0xD800 <= code <= 0xDFFF:
                code = 0xFFFD  # Go encodes surrogate halves as U+FFFD
            flush()
            pieces.append(chr(code))
        elif esc in _OCTAL:
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or any(d not in _OCTAL for d in digits):
                raise _QuoteError("quote syntax error")
            code = int(digits, 8)
            if code > 255:
                raise _QuoteError("quote syntax error")
            pending.append(code)
            i += 2
        elif esc == quote:
            flush()
            pieces.append(esc)
        else:
            raise _QuoteError("quote syntax error")
    flush()
    return "".join(pieces)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

_OPERATORS: Final = {
    "==": Operator.EQUAL,
    "!=": Operator.NOT_EQUAL,
    "~=": Operator.MATCHES,
}


class _Parser:
    def __init__(self, expression: str) -> None:
        self._expression = expression
        self._tokens = _tokenize(expression)
        self._index = 0

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind is not _Kind.EOF:
            self._index += 1
        return token

    def _fail(self, position: int, reason: str) -> NoReturn:
        raise FilterSyntaxError(self._expression, position, reason)

    def _unexpected(self, token: _Token, reason: str) -> NoReturn:
        # A malformed token reports what is wrong with it rather than what
        # the parser wanted in its place.
        self._fail(token.pos, token.error if token.kind is _Kind.ILLEGAL else reason)

    def parse(self) -> AllFilter:
        selectors = [self._selector()]
        while True:
            token = self._next()
            if token.kind is _Kind.EOF:
                return AllFilter(tuple(selectors))
            if token.kind is _Kind.SEPARATOR and token.text == ",":
                selectors.append(self._selector())
                continue
            self._unexpected(token, f"unexpected input: {token.text}")

    def _selector(self) -> Selector:
        fieldpath = self._fieldpath()
        token = self._peek()
        if token.kind is _Kind.EOF or (token.kind is _Kind.SEPARATOR and token.text == ","):
            return Selector(fieldpath, Operator.PRESENT)
        operator = self._operator()
        value_token = self._next()
        value = self._value(value_token, operator is Operator.MATCHES)
        if operator is not Operator.MATCHES:
            return Selector(fieldpath, operator, value)
        try:
            pattern = compile_regexp(value)
        except ValueError as exc:
            self._fail(value_token.pos, f"invalid regular expression {value!r}: {exc}")
        return Selector(fieldpath, operator, value, pattern)

    def _fieldpath(self) -> tuple[str, ...]:
        parts = [self._field()]
        while True:
            token = self._peek()
            if token.kind is not _Kind.SEPARATOR or token.text != ".":
                return tuple(parts)
            self._next()
            parts.append(self._field())

    def _field(self) -> str:
        token = self._next()
        if token.kind is _Kind.FIELD:
            return token.text
        if token.kind is _Kind.QUOTED:
            return self._unquote(token, allow_alternate_quotes=False)
        self._unexpected(token, "expected field or quoted")

    def _operator(self) -> Operator:
        token = self._next()
        if token.kind is _Kind.OPERATOR:
            operator = _OPERATORS.get(token.text)
            if operator is None:
                self._fail(token.pos, f'unsupported operator "{token.text}"')
            return operator
        self._unexpected(token, 'expected an operator ("=="|"!="|"~=")')

    def _value(self, token: _Token, allow_alternate_quotes: bool) -> str:
        if token.kind in (_Kind.VALUE, _Kind.FIELD):
            return token.text
        if token.kind is _Kind.QUOTED:
            return self._unquote(token, allow_alternate_quotes)
        self._unexpected(token, "expected value or quoted")

    def _unquote(self, token: _Token, allow_alternate_quotes: bool) -> str:
        if not allow_alternate_quotes and token.text[0] != '"':
            self._fail(token.pos, "invalid quote encountered")
        try:
            return _unquote(token.text)
        except _QuoteError as exc:
            self._fail(token.pos, f"unquoting failed: {exc}")


def parse(expression: str) -> Filter:
    """Parse one filter string; an empty (or all-whitespace) one matches all.

    Raises :class:`FilterSyntaxError` on malformed input.
    """
    if all(_is_space(ch) for ch in expression):
        return ALWAYS
    return _Parser(expression).parse()


def parse_all(expressions: Iterable[str]) -> Filter:
    """Parse several filter strings into a filter matching any of them.

    An empty list matches everything, as does a list containing an empty
    string.  Raises :class:`FilterSyntaxError` on the first malformed string.
    """
    if isinstance(expressions, str):
        raise TypeError("parse_all() takes a list of filter strings, not a str")
    filters = tuple(parse(expression) for expression in expressions)
    if not filters:
        return ALWAYS
    return AnyFilter(filters)


# ---------------------------------------------------------------------------
# RE2 approximation
# ---------------------------------------------------------------------------

_REPEAT: Final = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_FLAG_GROUP: Final = re.compile(r"\(\?([imsU]*)(?:(-)([imsU]*))?([:)])")
_NAMED_GROUP: Final = re.compile(r"\(\?P?<[A-Za-z0-9_]+>")
_MAX_REPEAT: Final = 1000
_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_PERL_CLASSES: Final = frozenset("dDsSwW")
_CHAR_ESCAPES: Final = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}


def _literal(code: int) -> str:
    """A Python regex atom matching exactly the character ``code``."""
    ch = chr(code)
    if ch.isascii() and ch.isalnum():
        return ch
    return f"\\U{code:08x}"


@dataclass(slots=True)
class _Group:
    multiline: bool
    # Flag specs of "(?flags)" directives seen in this group; each was
    # rewritten as an open "(?flags:" that must be closed at "|" and ")".
    scoped_flags: list[str] = field(default_factory=list)


class _Re2Translator:
    def __init__(self, source: str) -> None:
        self._src = source
        self._i = 0
        self._out: list[str] = []
        self._groups = [_Group(multiline=False)]

    def translate(self) -> str:
        src = self._src
        while self._i < len(src):
            ch = src[self._i]
            if ch == "\\":
                self._escape()
            elif ch == "[":
                self._char_class()
            elif ch == "(":
                self._open_group()
            elif ch == ")":
                self._close_group()
            elif ch == "|":
                group = self._groups[-1]
                self._out.append(")" * len(group.scoped_flags) + "|")
                self._out.extend(f"(?{spec}:" for spec in group.scoped_flags)
                self._i += 1
            elif ch == "$":
                self._out.append("$" if self._groups[-1].multiline else "\\Z")
                self._i += 1
            elif ch in "*+?":
                self._out.append(ch)
                self._i += 1
                self._after_repeat()
            elif ch == "{":
                self._brace()
            else:
                self._out.append(ch)
                self._i += 1
        if len(self._groups) > 1:
            raise ValueError("missing closing )")
        self._out.append(")" * len(self._groups[0].scoped_flags))
        return "".join(self._out)

    def _brace(self) -> None:
        match = _REPEAT.match(self._src, self._i)
        if match is None:
            # RE2 takes a "{" that does not start a repeat literally.
            self._out.append("\\{")
            self._i += 1
            return
        low, comma, high = match.groups()
        if int(low) > _MAX_REPEAT or (high and int(high) > _MAX_REPEAT):
            raise ValueError(f"invalid repeat count {match.group(0)}")
        if comma and high and int(high) < int(low):
            raise ValueError(f"invalid repeat count {match.group(0)}")
        self._out.append(match.group(0))
        self._i = match.end()
        self._after_repeat()

    def _after_repeat(self) -> None:
        src = self._src
        if src.startswith("?", self._i):
            self._out.append("?")
            self._i += 1
        if self._i < len(src) and (
            src[self._i] in "*+?" or _REPEAT.match(src, self._i) is not None
        ):
            raise ValueError("invalid nested repetition operator")

    def _open_group(self) -> None:
        src, i = self._src, self._i
        outer = self._groups[-1]
        if not src.startswith("(?", i):
            self._out.append("(")
            self._groups.append(_Group(outer.multiline))
            self._i += 1
            return
        named = _NAMED_GROUP.match(src, i)
        if named is not None:
            # Group names do not affect matching; Python's naming rules are
            # stricter than RE2's, so emit an unnamed group.
            self._out.append("(")
            self._groups.append(_Group(outer.multiline))
            self._i = named.end()
            return
        flags = _FLAG_GROUP.match(src, i)
        if flags is None:
            raise ValueError(f"unsupported group syntax at {src[i : i + 4]!r}")
        on, dash, off, terminator = flags.groups(default="")
        if "U" in on or "U" in off:
            raise ValueError("the ungreedy flag U is not supported")
        if dash and not off:
            raise ValueError(f"missing flags after '-' in {flags.group(0)!r}")
        spec = on + (f"-{off}" if off else "")
        multiline = (outer.multiline or "m" in on) and "m" not in off
        self._i = flags.end()
        if terminator == ":":
            self._out.append(f"(?{spec}:" if spec else "(?:")
            self._groups.append(_Group(multiline))
            return
        if not spec:
            raise ValueError("missing flags in (?)")
        # RE2 applies "(?flags)" to the rest of the enclosing group; Python
        # only allows global flags at the very start, so scope them.
        self._out.append(f"(?{spec}:")
        outer.scoped_flags.append(spec)
        outer.multiline = multiline

    def _close_group(self) -> None:
        if len(self._groups) == 1:
            raise ValueError("unexpected )")
        group = self._groups.pop()
        self._out.append(")" * len(group.scoped_flags) + ")")
        self._i += 1

    def _escape(self) -> None:
        src, i = self._src, self._i
        if i + 1 >= len(src):
            raise ValueError("trailing backslash at end of expression")
        ch = src[i + 1]
        if ch == "Q":
            end = src.find("\\E", i + 2)
            stop = len(src) if end < 0 else end
            self._out.append(re.escape(src[i + 2 : stop]))
            self._i = len(src) if end < 0 else end + 2
        elif ch == "z":
            self._out.append("\\Z")
            self._i += 2
        elif ch in "AbB" or ch in _PERL_CLASSES:
            self._out.append("\\" + ch)
            self._i += 2
        elif ch in "pP":
            raise ValueError("Unicode character classes (\\p, \\P) are not supported")
        else:
            code, self._i = self._escaped_char(i)
            self._out.append(_literal(code))

    def _escaped_char(self, i: int) -> tuple[int, int]:
        """Decode the single-character escape at ``src[i]`` (a backslash)."""
        src = self._src
        if i + 1 >= len(src):
            raise ValueError("trailing backslash at end of expression")
        ch = src[i + 1]
        if ch in _OCTAL:
            end = i + 2
            while end < len(src) and end < i + 4 and src[end] in _OCTAL:
                end += 1
            if ch != "0" and end == i + 2:
                raise ValueError(
                    f"invalid escape sequence \\{ch} (back-references are not supported)"
                )
            return int(src[i + 1 : end], 8), end
        if ch == "x":
            if src.startswith("{", i + 2):
                close = src.find("}", i + 3)
                digits = src[i + 3 : close] if close > 0 else ""
                if not digits or any(_digit_value(d) >= 16 for d in digits):
                    raise ValueError("invalid escape sequence \\x{")
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise ValueError("invalid escape sequence: code point out of range")
                return code, close + 1
            digits = src[i + 2 : i + 4]
            if len(digits) != 2 or any(_digit_value(d) >= 16 for d in digits):
                raise ValueError("invalid escape sequence \\x")
            return int(digits, 16), i + 4
        if ch in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[ch], i + 2
        if ch.isascii() and not ch.isalnum():
            return ord(ch), i + 2
        raise ValueError(f"invalid escape sequence \\{ch}")

    def _char_class(self) -> None:
        src = self._src
        self._out.append("[")
        self._i += 1
        if src.startswith("^", self._i):
            self._out.append("^")
            self._i += 1
        first = True
        while True:
            i = self._i
            if i >= len(src):
                raise ValueError("missing closing ]")
            ch = src[i]
            if ch == "]" and not first:
                self._out.append("]")
                self._i += 1
                return
            first = False
            if src.startswith("[:", i):
                end = src.find(":]", i + 2)
                if end >= 0:
                    name = src[i + 2 : end]
                    if name.startswith("^"):
                        raise ValueError(f"negated POSIX class [:{name}:] is not supported")
                    if name not in _POSIX_CLASSES:
                        raise ValueError(f"invalid character class [:{name}:]")
                    self._out.append(_POSIX_CLASSES[name])
                    self._i = end + 2
                    continue
            if ch == "\\" and i + 1 < len(src):
                if src[i + 1] in _PERL_CLASSES:
                    self._out.append(src[i : i + 2])
                    self._i += 2
                    continue
                if src[i + 1] in "pP":
                    raise ValueError("Unicode character classes (\\p, \\P) are not supported")
            low, i = self._class_char(i)
            if i + 1 < len(src) and src[i] == "-" and src[i + 1] != "]":
                high, i = self._class_char(i + 1)
                if high < low:
                    raise ValueError("invalid character class range")
                self._out.append(f"{_literal(low)}-{_literal(high)}")
            else:
                self._out.append(_literal(low))
            self._i = i

    def _class_char(self, i: int) -> tuple[int, int]:
        if self._src[i] == "\\":
            return self._escaped_char(i)
        return ord(self._src[i]), i + 1


def compile_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regular expression into an equivalent-enough
    :class:`re.Pattern`; use ``.search()`` for Go's ``MatchString``.

    Raises :class:`ValueError` if the expression is invalid or uses a feature
    this approximation does not support (see the module documentation).
    """
    translated = _Re2Translator(pattern).translate()
    try:
        return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise ValueError(str(exc)) from None
