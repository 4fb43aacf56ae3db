"""Tests for shared.filters (containerd's filter syntax)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from shared.filters import (
    ALWAYS,
    AdaptorFunc,
    AllFilter,
    AnyFilter,
    FieldsAdaptor,
    FieldValue,
    Filter,
    FilterSyntaxError,
    Operator,
    Selector,
    compile_regexp,
    parse,
    parse_all,
)

# ---------------------------------------------------------------------------
# containerd's filter_test.go table, as our own data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    name: str
    other: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def adaptor(self) -> AdaptorFunc:
        def lookup(path: Sequence[str]) -> tuple[str, bool]:
            head = path[0]
            if head == "name":
                return self.name, bool(self.name)
            if head == "other":
                return self.other, bool(self.other)
            if head == "labels":
                key = ".".join(path[1:])
                return self.labels.get(key, ""), key in self.labels
            return "", False

        return AdaptorFunc(lookup)


ITEMS = [
    Item("foo", labels={"foo": "true"}),
    Item("bar"),
    Item("foo", labels={"foo": "present", "more complex label": "present"}),
    Item("bar", labels={"bar": "true"}),
    Item("fooer", labels={'more complex label with \\ and "': "present"}),
    Item("fooer", labels={'more complex label with \\ and ".post': "present"}),
    Item("baz", other="too complex, yo"),
    Item("bazo", other="abc"),
    Item("compound", labels={"foo": "omg_asdf.asdf-qwer"}),
]
EVERY = list(range(len(ITEMS)))


def matching(flt: Filter) -> list[int]:
    return [i for i, item in enumerate(ITEMS) if flt.match(item.adaptor())]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("", EVERY, id="empty"),
        pytest.param("name", EVERY, id="present"),
        pytest.param("labels.foo", [0, 2, 8], id="label-present"),
        pytest.param("labels.foo,name", [0, 2, 8], id="label-and-name-present"),
        pytest.param("labels.foo==true", [0], id="label-value"),
        pytest.param("labels.foo==omg_asdf.asdf-qwer", [8], id="label-value-punctuated"),
        pytest.param("name==bar", [1, 3], id="name"),
        pytest.param("name!=bar", [0, 2, 4, 5, 6, 7, 8], id="name-not-equal"),
        pytest.param("name==bar,labels.bar", [3], id="name-and-label-present"),
        pytest.param('other=="too complex, yo"', [6], id="quoted-value"),
        pytest.param("other~=[abc]+,name!=foo", [6, 7], id="regexp-value"),
        pytest.param("other~=/[abc]+/,name!=foo", [6, 7], id="regexp-slash-quoted"),
        pytest.param("other~=/[abc]{1,2}/,name!=foo", [6, 7], id="regexp-slash-quoted-comma"),
        pytest.param('other~=/[abc]{0,1}"\\//,name!=foo', [], id="regexp-quoted-garbage"),
        pytest.param("name==bar,labels.bar==true", [3], id="name-and-label-value"),
        pytest.param("name==bar,labels.bar==wrong", [], id="name-and-label-no-match"),
        pytest.param('name==foo,labels."more complex label"', [2], id="quoted-label-present"),
        pytest.param(
            r'labels."more complex label with \\ and \""==present', [4], id="quoted-with-escapes"
        ),
        pytest.param(
            r'labels."more complex label with \\ and \"".post==present',
            [5],
            id="quoted-with-escapes-then-field",
        ),
    ],
)
def test_containerd_table(expression: str, expected: list[int]) -> None:
    assert matching(parse(expression)) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param(
            "labels.|foo|==omg_asdf.asdf-qwer",
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: "
            "invalid quote encountered",
            id="no-alternate-quotes-in-fields",
        ),
        pytest.param(
            r'labels.?"more complex label with \\ and \"".post==present',
            r'filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post'
            "==present]: expected field or quoted",
            id="junk-before-quoted-field",
        ),
        pytest.param(
            "name==foo,",
            "filters: parse error: [name==foo,]: expected field or quoted",
            id="trailing-comma",
        ),
        pytest.param(
            "labels.",
            "filters: parse error: [labels.]: expected field or quoted",
            id="trailing-field-separator",
        ),
        pytest.param(
            "image~=,id?=?fbaq",
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
            id="missing-value",
        ),
        pytest.param(
            "labels.ns/key==value",
            "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated",
            id="slash-in-unquoted-field",
        ),
        pytest.param(
            "labels.key==/value",
            "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated",
            id="unterminated-slash-value",
        ),
    ],
)
def test_containerd_error_messages(expression: str, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse(expression)
    assert str(info.value) == message


# ---------------------------------------------------------------------------
# Label keys, presence, operators
# ---------------------------------------------------------------------------

CONTAINER: dict[str, FieldValue] = {
    "id": "web-1",
    "image": "docker.io/library/nginx:latest",
    "runtime": {"name": "io.containerd.runc.v2"},
    "labels": {
        "com.example/tier": "frontend",
        "io.cri-containerd.kind": "sandbox",
        "a.b.c": "dotted",
        "empty": "",
        "multi\nline": "x",
    },
    "annotations": {},
    "unset": None,
}


def container_matches(expression: str) -> bool:
    return parse(expression).match(FieldsAdaptor(CONTAINER))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('labels."com.example/tier"==frontend', True),
        ('labels."com.example/tier"==backend', False),
        ('labels."com.example/tier"', True),
        ('labels."com.example/other"', False),
        ('labels."io.cri-containerd.kind"==sandbox', True),
        ("labels.a.b.c==dotted", True),
        ('labels."a.b.c"==dotted', True),
        ('labels."a.b".c==dotted', True),
        ('labels."a".b==dotted', False),
        ('labels."multi\\nline"==x', True),
        ('labels."\\x63om.example/tier"==frontend', True),
        ('labels."com.example/tier"~=^front', True),
        ('id==web-1,labels."com.example/tier"==frontend,runtime.name==io.containerd.runc.v2', True),
        ("image==docker.io/library/nginx:latest", True),
    ],
)
def test_quoted_label_keys(expression: str, expected: bool) -> None:
    assert container_matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("id", True, id="scalar"),
        pytest.param("runtime.name", True, id="nested-scalar"),
        pytest.param("labels.empty", True, id="label-with-empty-value"),
        pytest.param("labels.missing", False, id="missing-label"),
        pytest.param("labels", False, id="bare-map"),
        pytest.param("annotations", False, id="bare-empty-map"),
        pytest.param("annotations.x", False, id="key-in-empty-map"),
        pytest.param("unset", False, id="none-value"),
        pytest.param("nosuchfield", False, id="missing-field"),
        pytest.param("id.sub", False, id="below-scalar"),
        pytest.param("id,labels.empty", True, id="two-presence-selectors"),
        pytest.param("id,labels.missing", False, id="presence-and"),
    ],
)
def test_presence(expression: str, expected: bool) -> None:
    assert container_matches(expression) is expected


def test_equal_requires_presence_but_not_equal_does_not() -> None:
    absent = AdaptorFunc(lambda path: ("", False))
    present_empty = AdaptorFunc(lambda path: ("", True))
    assert not parse('x==""').match(absent)
    assert parse('x==""').match(present_empty)
    assert parse("x!=foo").match(absent)
    assert not parse('x!=""').match(absent)
    # ~= tests the value of a missing field as the empty string.
    assert parse("x~=^$").match(absent)
    assert not parse("x~=[a-z]").match(absent)


def test_not_equal_matches_items_lacking_the_field() -> None:
    assert matching(parse("other!=abc")) == [0, 1, 2, 3, 4, 5, 6, 8]


# ---------------------------------------------------------------------------
# Regular expressions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        pytest.param("v~=oo", "foo", True, id="search-not-anchored"),
        pytest.param("v~=^oo", "foo", False, id="anchored-start"),
        pytest.param("v~=^fo+$", "foo", True, id="anchored-both"),
        pytest.param("v~=foo$", "foo\n", False, id="dollar-is-end-of-text"),
        pytest.param("v~=(?m)foo$", "foo\nbar", True, id="multiline-dollar"),
        pytest.param("v~=^v\\d+\\.\\d+$", "v1.23", True, id="bare-escapes"),
        pytest.param("v~=\\d", "\u0663", False, id="digit-class-is-ascii"),
        pytest.param('v~="^v\\\\d+$"', "v12", True, id="double-backslash-in-quotes"),
        pytest.param("v~=/^a b$/", "a b", True, id="slash-quoted-space"),
        pytest.param("v~=|^docker.io/library/|", "docker.io/library/x", True, id="pipe-quoted"),
        pytest.param("v~=/a\\/b/", "a/b", True, id="escaped-slash"),
        pytest.param("v~=ab(?i)cd", "abCD", True, id="inline-flag"),
        pytest.param("v~=ab(?i)cd", "ABcd", False, id="inline-flag-scoped"),
        pytest.param("v~=^x(?i)y|^z", "Z", True, id="inline-flag-across-alternation"),
        pytest.param("v~=^[[:alpha:]]+$", "abcXYZ", True, id="posix-class"),
        pytest.param("v~=^[[:alpha:]]+$", "abc1", False, id="posix-class-no-match"),
        pytest.param("v~=/^a{,2}$/", "a{,2}", True, id="brace-literal-like-re2"),
        pytest.param("v~=\\Qa.b\\E", "a.b", True, id="quote-meta"),
        pytest.param("v~=\\Qa.b\\E", "axb", False, id="quote-meta-literal"),
        pytest.param("v~=end\\z", "the end", True, id="backslash-z"),
        pytest.param("v~=(?P<n>ab)+", "abab", True, id="named-group"),
        pytest.param("v~=(?<n>ab)+", "abab", True, id="named-group-short"),
        pytest.param("v~=牛", "cow 牛", True, id="unicode"),
    ],
)
def test_regexp(expression: str, value: str, expected: bool) -> None:
    assert parse(expression).match(FieldsAdaptor({"v": value})) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=a)",
        "(?<!a)b",
        "(?>a)",
        "(a)\\1",
        "(?P<x>a)(?P=x)",
        "a*+",
        "a**",
        "a{2}{3}",
        "a{1001}",
        "\\pL",
        "(?U)a+",
        "(?x)a",
        "[[:^alpha:]]",
        "[[:nope:]]",
        "\\Z",
        "\\e",
        "[z-a]",
        "(",
        ")",
        "[",
        "\\",
    ],
)
def test_regexp_rejects_what_re2_rejects(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        compile_regexp(pattern)


def test_selector_compiles_its_pattern() -> None:
    selector = Selector(("name",), Operator.MATCHES, "^a")
    assert selector.pattern is not None
    assert selector.match(FieldsAdaptor({"name": "abc"}))
    with pytest.raises(ValueError, match="missing closing"):
        Selector(("name",), Operator.MATCHES, "(")


# ---------------------------------------------------------------------------
# Quoting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "decoded"),
    [
        (r'"a\tb"', "a\tb"),
        (r'"\a\b\f\n\r\v\\"', "\a\b\f\n\r\v\\"),
        (r'"\u00e9"', "é"),
        (r'"\U0001F600"', "\U0001f600"),
        (r'"\x41"', "A"),
        (r'"\101"', "A"),
        (r'"\xc3\xa9"', "é"),
        (r'"\""', '"'),
        ('"a,b c"', "a,b c"),
        ('""', ""),
        ('"ünïcødé"', "ünïcødé"),
    ],
)
def test_quoted_value_escapes(literal: str, decoded: str) -> None:
    assert parse(f"v=={literal}").match(FieldsAdaptor({"v": decoded}))


def test_invalid_utf8_byte_escape_never_equals_text() -> None:
    flt = parse(r'v=="\xff"')
    assert not flt.match(FieldsAdaptor({"v": "\xff"}))
    assert not flt.match(FieldsAdaptor({"v": "\ufffd"}))


# ---------------------------------------------------------------------------
# Whitespace and OR
# ---------------------------------------------------------------------------

PLUGIN: dict[str, FieldValue] = {"type": "io.containerd.snapshotter.v1", "id": "overlayfs"}


@pytest.mark.parametrize(
    "expression",
    [
        "type==io.containerd.snapshotter.v1, id==overlayfs",
        "type==io.containerd.snapshotter.v1 ,id==overlayfs",
        "  type == io.containerd.snapshotter.v1 ,\tid==overlayfs  ",
        "type==io.containerd.snapshotter.v1,\n id==overlayfs",
    ],
)
def test_whitespace_between_tokens(expression: str) -> None:
    assert parse(expression).match(FieldsAdaptor(PLUGIN))


def test_whitespace_only_matches_everything() -> None:
    assert parse("   ") is ALWAYS


def test_parse_all_ors_its_filters() -> None:
    flt = parse_all(["name==foo,labels.foo==true", "name==bazo"])
    assert matching(flt) == [0, 7]


@pytest.mark.parametrize(
    "expressions",
    [
        pytest.param([], id="no-filters"),
        pytest.param([""], id="one-empty"),
        pytest.param(["", ""], id="several-empty"),
        pytest.param(["name==nothing", ""], id="empty-among-others"),
    ],
)
def test_parse_all_matches_everything(expressions: list[str]) -> None:
    assert matching(parse_all(expressions)) == EVERY


def test_parse_all_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="list of filter strings"):
        parse_all("name==foo")


def test_parse_all_reports_syntax_errors() -> None:
    with pytest.raises(FilterSyntaxError, match=r"\[name==\]: expected value or quoted"):
        parse_all(["name==foo", "name=="])


# ---------------------------------------------------------------------------
# Syntax errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "position", "reason"),
    [
        # unterminated quotes
        pytest.param('labels."foo', 7, "quoted literal not terminated", id="unterminated-field"),
        pytest.param('name=="foo', 6, "quoted literal not terminated", id="unterminated-value"),
        pytest.param(
            'labels."a\nb"==c', 7, "quoted literal not terminated", id="newline-in-quotes"
        ),
        pytest.param("name~=|abc", 6, "quoted literal not terminated", id="unterminated-pipe"),
        # missing value after operator
        pytest.param("name==", 6, "expected value or quoted", id="value-at-end"),
        pytest.param("name!=  ", 8, "expected value or quoted", id="value-only-spaces"),
        pytest.param("name==,id", 6, "expected value or quoted", id="value-then-comma"),
        pytest.param("name==.x", 6, "expected value or quoted", id="value-starts-with-dot"),
        # bad regex
        pytest.param("name~=[", 6, "invalid regular expression", id="regex-bracket"),
        pytest.param("name~=(?=x)", 6, "invalid regular expression", id="regex-lookahead"),
        pytest.param("name~=/a**/", 6, "invalid regular expression", id="regex-quoted"),
        # trailing garbage
        pytest.param("name==foo bar", 10, "unexpected input: bar", id="second-value"),
        pytest.param('name=="foo"bar', 11, "unexpected input: bar", id="after-quoted-value"),
        pytest.param('labels."a"b', 10, "expected an operator", id="after-quoted-field"),
        pytest.param("name)", 4, "expected an operator", id="junk-after-field"),
        pytest.param("name name", 5, "expected an operator", id="two-fields"),
        pytest.param("labels.foo-bar==x", 10, "expected an operator", id="unquoted-hyphen"),
        # empty fields
        pytest.param("==x", 0, "expected field or quoted", id="no-field"),
        pytest.param(".name", 0, "expected field or quoted", id="leading-dot"),
        pytest.param("labels..x", 7, "expected field or quoted", id="double-dot"),
        pytest.param(",name", 0, "expected field or quoted", id="leading-comma"),
        pytest.param("name,,id", 5, "expected field or quoted", id="double-comma"),
        pytest.param("name, ", 6, "expected field or quoted", id="comma-then-space"),
        # operators
        pytest.param("name=foo", 4, 'unsupported operator "="', id="single-equals"),
        pytest.param("name===foo", 4, 'unsupported operator "==="', id="triple-equals"),
        pytest.param("name=~foo", 4, 'unsupported operator "=~"', id="reversed-match"),
        # quoting
        pytest.param('labels."\\g"', 7, "illegal escape sequence", id="illegal-escape"),
        pytest.param('labels."\\xz1"', 7, "illegal numeric escape sequence", id="bad-hex"),
        pytest.param('name=="\\777"', 6, "unquoting failed", id="octal-out-of-range"),
        pytest.param("labels.|x|", 7, "invalid quote encountered", id="pipe-quoted-field"),
        pytest.param("name==/x/", 6, "invalid quote encountered", id="slash-quoted-equals"),
        pytest.param("'name'", 0, "expected field or quoted", id="single-quoted-field"),
        pytest.param("name\x00", 4, "unexpected null", id="nul"),
    ],
)
def test_syntax_errors(expression: str, position: int, reason: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse(expression)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.expression == expression
    assert err.position == position
    assert reason in err.reason
    assert str(err).startswith("filters: parse error: [")
    assert str(err).endswith(err.reason)


def test_error_message_marks_the_position() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse("name==foo,labels.?x")
    assert str(info.value) == (
        "filters: parse error: [name==foo,labels. >|?|< x]: expected field or quoted"
    )


def test_single_quotes_are_ordinary_value_characters() -> None:
    assert parse("name=='x'").match(FieldsAdaptor({"name": "'x'"}))


# ---------------------------------------------------------------------------
# FieldsAdaptor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("id",), ("web-1", True)),
        (("runtime", "name"), ("io.containerd.runc.v2", True)),
        (("runtime",), ("", False)),
        (("labels", "com.example/tier"), ("frontend", True)),
        (("labels", "a", "b", "c"), ("dotted", True)),
        (("labels", "a.b", "c"), ("dotted", True)),
        (("labels", "empty"), ("", True)),
        (("labels", "nope"), ("", False)),
        (("labels",), ("", False)),
        (("annotations", "x"), ("", False)),
        (("unset",), ("", False)),
        (("id", "x"), ("", False)),
        ((), ("", False)),
    ],
)
def test_fields_adaptor(path: tuple[str, ...], expected: tuple[str, bool]) -> None:
    assert FieldsAdaptor(CONTAINER).field(path) == expected


def test_fields_adaptor_deeper_nesting() -> None:
    adaptor = FieldsAdaptor({"target": {"platform": {"os": "linux"}, "digest": "sha256:ab"}})
    assert adaptor.field(("target", "platform", "os")) == ("linux", True)
    assert adaptor.field(("target", "digest")) == ("sha256:ab", True)
    assert adaptor.field(("target", "platform")) == ("", False)
    assert parse("target.platform.os==linux").match(adaptor)


def test_parse_builds_selectors() -> None:
    flt = parse('name~=^a, labels."x.y"')
    assert isinstance(flt, AllFilter)
    first, second = flt.filters
    assert first == Selector(("name",), Operator.MATCHES, "^a")
    assert isinstance(first, Selector)
    assert first.pattern is not None
    assert first.pattern.search("abc")
    assert second == Selector(("labels", "x.y"), Operator.PRESENT)
    assert isinstance(parse_all(["a", "b"]), AnyFilter)
