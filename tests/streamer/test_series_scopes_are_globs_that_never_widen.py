"""Series scopes: the glob grammar, containment that never grants more than asked, and scoped key-file lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestream_streamer.access.clientid import key_id
from pulsestream_streamer.access.keys import InvalidKeyError, KeyStore, parse_key_file
from pulsestream_streamer.access.scopes import ALL, Scope, ScopeError, glob_matches, glob_within

from pulsestream.spec import SERIES_NAME_PATTERN

# A small alphabet, so that random globs and names actually meet; ';' and '.' as in OTLP names.
NAMES = st.text(alphabet="ab.;=", min_size=0, max_size=8).map(lambda tail: "a" + tail)
GLOBS = st.text(alphabet="ab.;=*", min_size=0, max_size=7).map(lambda tail: "a" + tail)


@pytest.mark.parametrize(
    ("glob", "name", "expected"),
    [
        ("cpu", "cpu", True),
        ("cpu", "cpu2", False),
        ("cpu", "CPU", False),
        ("mem*", "memory", True),
        ("mem*", "mem", True),
        ("checkout.*", "checkout.latency", True),
        ("checkout.*", "checkout.latency.count", True),
        ("checkout.*", "checkout.latency;tenant=acme", False),  # * stops at the attribute separator
        ("checkout.**", "checkout.latency;tenant=acme", True),
        ("orders;tenant=acme", "orders;tenant=acme", True),
        ("orders;tenant=acme", "orders;tenant=acme-evil", False),
        ("orders;tenant=acme;**", "orders;tenant=acme;region=eu", True),
        ("orders;tenant=acme;**", "orders;tenant=acmex", False),
        ("*", "cpu", True),
        ("*", "http.server.duration;method=GET", False),
        ("**", "http.server.duration;method=GET", True),
        ("http.server/*", "http.server/duration", True),
        ("a.b", "aXb", False),  # . is a letter of the alphabet, never a regex dot
    ],
)
def test_a_glob_matches_what_the_readme_says(glob: str, name: str, expected: bool) -> None:
    assert glob_matches(glob, name) is expected


@given(GLOBS, GLOBS, NAMES)
def test_a_glob_said_to_fit_inside_another_never_matches_a_name_the_other_does_not(
    inner: str, outer: str, name: str
) -> None:
    if glob_within(inner, outer) and glob_matches(inner, name):
        assert glob_matches(outer, name), (inner, outer, name)


@given(GLOBS, NAMES)
def test_a_glob_fits_inside_itself_and_a_name_fits_exactly_where_it_matches(glob: str, name: str) -> None:
    assert glob_within(glob, glob)
    if "*" not in name:
        assert glob_within(name, glob) == glob_matches(glob, name)


@pytest.mark.parametrize(
    ("inner", "outer", "expected"),
    [
        ("memory", "mem*", True),
        ("mem*", "mem*", True),
        ("memory.*", "mem*", True),
        ("m*", "mem*", False),
        ("mem**", "mem*", False),  # ** may hold a ;, * may not
        ("mem*", "mem**", True),
        ("a;b", "a*", False),
        ("*a*", "**", True),
    ],
)
def test_containment_of_typical_globs(inner: str, outer: str, expected: bool) -> None:
    assert glob_within(inner, outer) is expected


def test_a_scope_names_the_first_glob_wider_than_it() -> None:
    key = Scope.of(["cpu", "mem*"])
    assert key.first_wider(Scope.of(["memory", "cpu"])) is None
    assert key.first_wider(Scope.of(["memory", "m*", "x"])) == "m*"
    assert key.first_wider(ALL) == "**"
    assert ALL.first_wider(Scope.of(["anything*"])) is None
    assert Scope.of(["cpu", "**"]) == ALL


@pytest.mark.parametrize("bad", ["", "  ", "cpu mem", "a,b", "1cpu", "cpu?", "cp[u]", "a%b", "é"])
def test_globs_outside_the_name_alphabet_are_refused_without_being_quoted(bad: str) -> None:
    with pytest.raises(ScopeError) as refused:
        Scope.of([bad])
    if bad.strip():
        assert bad not in str(refused.value)


def test_every_series_name_is_a_glob_that_matches_only_itself() -> None:
    import re

    name = "checkout.latency;service.name=shop"
    assert re.match(SERIES_NAME_PATTERN, name)
    assert Scope.of([name]).allows(name) and not Scope.of([name]).allows(name + "x")


def test_key_file_lines_carry_an_optional_series_scope() -> None:
    entries = parse_key_file("# keys\nall-series\nscoped series=cpu,mem*  # a comment\n\n")
    assert entries == [("all-series", ALL), ("scoped", Scope(("cpu", "mem*")))]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("sekrit-key series=", "line 1"),
        ("sekrit-key series=cpu?", "line 1"),
        ("sekrit-key scope=cpu", "only series="),
        ("sekrit-key series=cpu extra", "only series="),
    ],
)
def test_a_bad_key_file_line_is_named_by_number_never_quoted(line: str, says: str) -> None:
    with pytest.raises(InvalidKeyError) as refused:
        parse_key_file(line)
    assert says in str(refused.value) and "sekrit" not in str(refused.value)


def test_the_key_store_hands_out_each_key_s_scope_and_env_keys_grant_everything(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("scoped-key series=cpu\nwide-key\ntwice series=a\ntwice series=b\n")
    store = KeyStore(["env-key"], key_file=path)
    assert store.grant("env-key").scope == ALL  # type: ignore[union-attr]
    assert store.grant("wide-key").scope == ALL  # type: ignore[union-attr]
    scoped = store.grant("scoped-key")
    assert scoped is not None and scoped.scope == Scope(("cpu",)) and scoped.key_id == key_id("scoped-key")
    assert store.grant("twice").scope == Scope(("a", "b"))  # type: ignore[union-attr]
    assert store.grant("nope") is None and store.grant(None) is None
    assert store.grant_of(key_id("scoped-key")) == scoped


def test_narrowing_a_key_in_the_file_is_a_change_that_applies(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("the-key\n")
    store = KeyStore(key_file=path)
    path.write_text("the-key series=cpu\n")
    assert store.reload() is True
    assert store.grant("the-key").scope == Scope(("cpu",))  # type: ignore[union-attr]
