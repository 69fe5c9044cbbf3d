"""Which series a caller may read: globs over series names, and whether one scope fits inside another.

A scope is a set of globs (``cpu``, ``mem*``, ``checkout.**``) or *every
series*. Pure logic: no I/O; :mod:`.keys`, :mod:`.tokens` and :mod:`.idp`
build scopes, the HTTP layer applies them to ``/v1/series`` and ``/v1/stream``.

The glob grammar, on the series-name alphabet (letters, digits, ``_ . : / ; = ~ -``):

- ``*`` matches any run of characters, the empty one too, **except** ``;``;
- ``**`` matches any run of characters, ``;`` included;
- every other character matches itself, case-sensitively (``fnmatch.fnmatchcase``
  without ``?`` and ``[...]``: neither is in the name alphabet, so a glob never
  reads differently from the name it looks like).

Why ``*`` stops at ``;``: an OTLP data point with attributes becomes
``NAME;key=value;key=value`` (Graphite's tag form), and attributes are where
tenants, regions and services are told apart. ``checkout.*`` grants
``checkout.latency`` and ``checkout.latency.count``, not
``checkout.latency;tenant=acme``; a tenant's series are granted on purpose,
``orders;tenant=acme`` or ``orders;tenant=acme;**``, and ``**`` alone is every
series. So a ``*`` never hands out more than the names it visibly covers.

Guarantees:

- :meth:`Scope.allows` is exact: a name matches a glob or it does not.
- :func:`glob_within` is sound: when it says ``a`` fits in ``b``, every name
  ``a`` matches is matched by ``b`` (property-tested). It may say no for a few
  exotic pairs that do fit; a token then asks for a wider scope than it may
  have, and the answer is ``403``, never a wider grant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pulsestream.spec import MAX_SERIES_NAME_LENGTH

__all__ = ["ALL", "GLOB_PATTERN", "Scope", "ScopeError", "glob_within", "parse_globs"]

#: A glob: the series-name alphabet plus ``*``; it starts with a letter or a ``*``.
GLOB_PATTERN = re.compile(rf"^[A-Za-z*][A-Za-z0-9_.:/;=~*-]{{0,{2 * MAX_SERIES_NAME_LENGTH - 1}}}$")
#: The most globs one scope may hold (a key line, a token request, an IdP claim).
MAX_GLOBS = 64

_STAR, _GLOBSTAR = "*", "**"


class ScopeError(ValueError):
    """A glob is not valid; ``str()`` says which (by position) and what is allowed."""


def _atoms(glob: str) -> tuple[str, ...]:
    """``glob`` as atoms: one character each, ``*`` or ``**`` (a run of two or more stars is ``**``)."""
    atoms: list[str] = []
    for star_run, char in re.findall(r"(\*+)|(.)", glob):
        atoms.append((_GLOBSTAR if len(star_run) > 1 else _STAR) if star_run else char)
    return tuple(atoms)


@lru_cache(maxsize=4096)
def _regex(glob: str) -> re.Pattern[str]:
    parts = []
    for atom in _atoms(glob):
        if atom == _GLOBSTAR:
            parts.append(".*")
        elif atom == _STAR:
            parts.append("[^;]*")
        else:
            parts.append(re.escape(atom))
    return re.compile("".join(parts), re.DOTALL)


def glob_matches(glob: str, name: str) -> bool:
    """Whether series ``name`` matches ``glob`` (see the module docstring for the grammar)."""
    return _regex(glob).fullmatch(name) is not None


@lru_cache(maxsize=4096)
def glob_within(inner: str, outer: str) -> bool:
    """Whether every name ``inner`` matches is matched by ``outer`` (sound; see the module's guarantees).

    ``outer`` is matched against ``inner`` read as a word whose wildcards are letters of their own: an
    outer ``**`` takes anything, an outer ``*`` takes inner characters other than ``;`` and inner ``*``
    (never an inner ``**``, which may stand for a ``;``), a literal takes only itself.
    """
    a, b = _atoms(inner), _atoms(outer)
    # reach[j]: outer's first i atoms can produce inner's first j atoms.
    reach = [True] + [False] * len(a)
    for atom in b:
        nxt = [False] * (len(a) + 1)
        if atom == _GLOBSTAR:
            seen = False
            for j in range(len(a) + 1):
                seen = seen or reach[j]
                nxt[j] = seen
        elif atom == _STAR:
            nxt[0] = reach[0]
            for j in range(1, len(a) + 1):
                nxt[j] = reach[j] or (nxt[j - 1] and a[j - 1] not in (";", _GLOBSTAR))
        else:
            for j in range(1, len(a) + 1):
                nxt[j] = reach[j - 1] and a[j - 1] == atom
        reach = nxt
    return reach[len(a)]


def parse_globs(items: Iterable[str], what: str = "glob") -> tuple[str, ...]:
    """Validate globs (blanks dropped, duplicates once, order kept); raise :class:`ScopeError` naming the bad one.

    The message quotes a glob only by its position, so a line that holds a secret is never echoed.
    """
    globs = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    for index, glob in enumerate(globs, start=1):
        if not GLOB_PATTERN.match(glob):
            raise ScopeError(
                f"{what} #{index} is not a series glob (a letter or *, then letters, digits, _ . : / ; = ~ - "
                "and *; * stops at ;, ** does not)"
            )
    if not globs:
        raise ScopeError(f"at least one {what} is needed")
    if len(globs) > MAX_GLOBS:
        raise ScopeError(f"at most {MAX_GLOBS} globs, got {len(globs)}")
    return globs


@dataclass(frozen=True, slots=True)
class Scope:
    """The series a caller may read: ``globs``, or every series when ``globs`` is ``None``."""

    globs: tuple[str, ...] | None = None

    @classmethod
    def of(cls, globs: Iterable[str]) -> Scope:
        """A scope of ``globs`` (validated); ``**`` among them means every series."""
        parsed = parse_globs(globs)
        return ALL if _GLOBSTAR in parsed else cls(parsed)

    @property
    def everything(self) -> bool:
        return self.globs is None

    def allows(self, name: str) -> bool:
        """Whether series ``name`` is in this scope."""
        return self.globs is None or any(glob_matches(glob, name) for glob in self.globs)

    def first_denied(self, names: Iterable[str]) -> str | None:
        """The first of ``names`` outside this scope, or ``None``."""
        return next((name for name in names if not self.allows(name)), None)

    def first_wider(self, asked: Scope) -> str | None:
        """The first glob of ``asked`` this scope does not cover (``**`` for every series), or ``None``."""
        if self.globs is None:
            return None
        if asked.globs is None:
            return _GLOBSTAR
        return next((g for g in asked.globs if not any(glob_within(g, mine) for mine in self.globs)), None)

    def union(self, other: Scope) -> Scope:
        """Everything either scope allows."""
        if self.globs is None or other.globs is None:
            return ALL
        return Scope(tuple(dict.fromkeys((*self.globs, *other.globs))))

    def claim(self) -> list[str]:
        """The scope as a token's ``series`` claim: its globs, ``["**"]`` for every series."""
        return [_GLOBSTAR] if self.globs is None else list(self.globs)

    def __str__(self) -> str:
        return "every series" if self.globs is None else ",".join(self.globs)


#: Every series.
ALL = Scope()
