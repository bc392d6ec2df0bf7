"""Field declarations, and the wire methods generated from them.

A document is a slotted dataclass whose fields each name their reading rule
(``text()``, ``choice(default)``, ``unit()``, ``timestamp()``,
``nested(Mastery)`` ...). The rule gives the field's default, how it is read
from a stored document (spec section 4), how it is written and how it is
copied. ``document`` turns a class's declarations into the Python source of
its ``from_dict``, ``to_dict`` and ``clone`` once, at import, the way
``dataclasses`` writes ``__init__``: the documents are read, copied and
written several times per session, and straight-line code costs a fraction
of a loop over the declarations on every call. Adding a field is one line in
its class.

The rules themselves are in ``rules``; this module spells them as
dataclass fields and generates the methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, dataclass_transform

from . import readers
from .rules import (
    Choice,
    Duration,
    Entries,
    Extras,
    Flag,
    FreeForm,
    Ident,
    Integer,
    Map,
    Nested,
    OptText,
    OptTimestamp,
    Rule,
    Strings,
    Text,
    Timestamp,
    Unit,
    Version,
)

RULE = "autoplay_rule"
"""The key of a field's rule in its dataclass metadata."""


def _declare(rule: Rule, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, **kw: Any) -> Any:
    return dataclasses.field(default=default, default_factory=factory, metadata={RULE: rule}, **kw)


# --- the declarations' spelling ----------------------------------------------------


def text(default: str = "", *, nonblank: bool = False) -> Any:
    return _declare(Text(default, nonblank), default)


def ident(*, drops_document: bool = False) -> Any:
    """A required id; a document without one takes the caller's (or, ``drops_document``, is dropped)."""
    return _declare(Ident(drops_document))


def opt_text(*, blank_is_none: bool = False) -> Any:
    return _declare(OptText(blank_is_none), None)


def flag(default: bool = False) -> Any:
    return _declare(Flag(default), default)


def choice(default: Enum) -> Any:
    return _declare(Choice(default), default)


def integer(
    low: int = 0, high: int | None = None, *, at_least_len_of: str | None = None, no_default: bool = False
) -> Any:
    rule = Integer(low, high, at_least_len_of)
    return _declare(rule) if no_default else _declare(rule, low)


def unit() -> Any:
    return _declare(Unit(), 0.0)


def timestamp(*, fallback: str | None = None, no_default: bool = False) -> Any:
    rule = Timestamp(fallback)
    return _declare(rule) if no_default else _declare(rule, factory=readers._now)


def opt_timestamp() -> Any:
    return _declare(OptTimestamp(), None)


def duration(start: str, end: str) -> Any:
    return _declare(Duration(start, end), 0.0)


def strings() -> Any:
    return _declare(Strings(), factory=list)


def free_form() -> Any:
    return _declare(FreeForm(), factory=dict)


def nested(doc: type, *, optional: bool = False) -> Any:
    return _declare(Nested(doc, optional), None) if optional else _declare(Nested(doc), factory=doc)


def by_id(doc: type) -> Any:
    return _declare(Map(doc), factory=dict)


def entries(doc: type, *, unique: str, keep: int) -> Any:
    return _declare(Entries(doc, unique, keep), factory=list)


def schema_version(default: int) -> Any:
    return _declare(Version(default), default)


def extras() -> Any:
    return _declare(Extras(), factory=dict, repr=False)


# --- what a document knows about its fields ------------------------------------------


@dataclass(frozen=True)
class WireField:
    key: str  # in the JSON document
    name: str  # the attribute
    rule: Rule


@dataclass(frozen=True)
class Layout:
    """A document's wire shape, as ``to_dict`` writes it and the API's schemas must describe it."""

    fields: tuple[WireField, ...]  # in the order written, after the header and the constants
    header: tuple[WireField, ...]
    constants: Mapping[str, Any]
    extras: str | None  # the attribute holding unknown keys

    @property
    def keys(self) -> tuple[str, ...]:
        """Every wire key, in ``to_dict``'s order."""
        return (*(f.key for f in self.header), *self.constants, *(f.key for f in self.fields))


def layout(doc: type) -> Layout:
    return doc.__autoplay_layout__  # type: ignore[attr-defined,no-any-return]


_HELPERS = {
    name: getattr(readers, name)
    for name in (
        "_FLOAT_MAX",
        "_bool",
        "_dict",
        "_duration",
        "_enum",
        "_extras",
        "_int_in",
        "_json_safe",
        "_opt_str",
        "_opt_ts",
        "_stamp",
        "_str",
        "_str_list",
        "_ts",
        "_unit",
        "_version",
    )
}


class _Source:
    """The source of one class's generated methods, and the objects its names refer to."""

    def __init__(self, doc: type, wire: tuple[WireField, ...], known: frozenset[str]) -> None:
        self.doc = doc
        self.known = known
        self.names = {f.name for f in wire}
        self.globals: dict[str, Any] = {**_HELPERS, "Mapping": Mapping}

    def ref(self, obj: Any, hint: str) -> str:
        name = f"_{hint}_{len(self.globals)}"
        self.globals[name] = obj
        return name

    def var(self, field_name: str) -> str:
        if field_name not in self.names:
            raise TypeError(f"{self.doc.__name__}: a rule refers to no field {field_name!r}")
        return f"v_{field_name}"

    def reader(self, doc: type) -> str:
        return self.ref(doc.__autoplay_read__, f"read_{doc.__name__}")  # type: ignore[attr-defined]


def _read_order(wire: tuple[WireField, ...]) -> list[WireField]:
    """Declaration order, but a field after the fields its rule uses."""
    by_name = {f.name: f for f in wire}
    order: list[WireField] = []

    def visit(f: WireField, path: tuple[str, ...]) -> None:
        if f in order:
            return
        if f.name in path:
            raise TypeError(f"fields {path} need each other")
        for dep in f.rule.needs:
            if dep in by_name:
                visit(by_name[dep], (*path, f.name))
        order.append(f)

    for f in wire:
        visit(f, ())
    return order


_GENERATED_NAMES = {"data", "now", "g", "m", "k", "e", "out", "seen", "item"}


def _reader_source(
    src: _Source,
    wire: tuple[WireField, ...],
    idents: list[str],
    top_level: str | None,
    optional: bool,
    check: Callable[[Mapping[str, Any]], None] | None,
) -> list[str]:
    """``read(data, now, *ids)``: nested documents' readers call each other directly, without ``from_dict``."""
    lines = [f"def read(data, now{''.join(f', {n}=' + repr('') for n in idents)}):"]
    if top_level:
        lines.append(f"    if not isinstance(data, Mapping): raise TypeError({top_level + ' must be a JSON object'!r})")
    elif optional:
        lines.append("    if not isinstance(data, dict): return None")
    else:
        lines.append("    if not isinstance(data, dict): data = {}")
    if check is not None:
        lines.append(f"    {src.ref(check, 'check')}(data)")
    lines.append("    g = data.get")
    for f in _read_order(wire):
        v = f"v_{f.name}"
        if not isinstance(f.rule, Extras):
            lines.append(f"    {v} = g({f.key!r})")
        lines.extend("    " + line for line in f.rule.read(v, f.name, src))
    lines.append(f"    return {src.ref(src.doc, src.doc.__name__)}({', '.join(f'v_{f.name}' for f in wire)})")
    # The public from_dict: the same, with the caller's ids by name (keyword-only on a top-level document).
    ids = "".join(f"{n}='', " for n in idents)
    signature = f"data, *, {ids}now=None" if top_level else f"data, {ids}*, now=None"
    lines.append(f"def from_dict(cls, {signature}):")
    lines.append(f"    return read(data, _stamp(now){''.join(f', {n}' for n in idents)})")
    return lines


def _to_dict_source(src: _Source, lay: Layout) -> list[str]:
    """``to_dict``: the header, the constants, the fields; unknown keys first, as they were read."""
    items = [f"{f.key!r}: {f.rule.write('self.' + f.name, src)}" for f in lay.header]
    items += [f"{key!r}: {src.ref(value, 'const')}" for key, value in lay.constants.items()]
    items += [f"{f.key!r}: {f.rule.write('self.' + f.name, src)}" for f in lay.fields]
    lines = ["def to_dict(self):", f"    d = {{{', '.join(items)}}}"]
    if lay.extras:
        extra = f"self.{lay.extras}"
        lines += [f"    if {extra}:", f"        x = _json_safe({extra})", "        x.update(d)", "        return x"]
    return [*lines, "    return d"]


def _clone_source(src: _Source, wire: tuple[WireField, ...]) -> list[str]:
    copies = ", ".join(f.rule.copy("self." + f.name, src) for f in wire)
    return ["def clone(self):", f"    return {src.ref(src.doc, src.doc.__name__)}({copies})"]


def _generate(
    cls: type,
    wire: tuple[WireField, ...],
    lay: Layout,
    top_level: str | None,
    optional: bool,
    check: Callable[[Mapping[str, Any]], None] | None,
) -> None:
    """Compile the wire methods of ``cls`` from its declarations and attach them."""
    src = _Source(cls, wire, frozenset(lay.keys))
    idents = [f.name for f in wire if isinstance(f.rule, Ident) and not f.rule.drops_document]
    if _GENERATED_NAMES & set(idents):  # ids are parameters of the generated reader
        raise TypeError(f"{cls.__name__}: an id field clashes with a name of the generated code")
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    lines = _reader_source(src, wire, idents, top_level, optional, check) + _to_dict_source(src, lay)
    if not frozen:  # a frozen document never changes: copies share it
        lines += _clone_source(src, wire)
    namespace = src.globals
    exec(compile("\n".join(lines), f"<{cls.__module__}.{cls.__name__} wire methods>", "exec"), namespace)
    for name in ("to_dict", "from_dict", *(() if frozen else ("clone",))):
        method = namespace[name]
        method.__qualname__ = f"{cls.__name__}.{name}"
        method.__module__ = cls.__module__
        setattr(cls, name, classmethod(method) if name == "from_dict" else method)
    cls.__autoplay_read__ = namespace["read"]  # type: ignore[attr-defined]
    cls.__autoplay_layout__ = lay  # type: ignore[attr-defined]


@dataclass_transform(
    field_specifiers=(
        text,
        ident,
        opt_text,
        flag,
        choice,
        integer,
        unit,
        timestamp,
        opt_timestamp,
        duration,
        strings,
        free_form,
        nested,
        by_id,
        entries,
        schema_version,
        extras,
    )
)
def document(
    *,
    frozen: bool = False,
    top_level: str | None = None,
    optional: bool = False,
    constants: Mapping[str, Any] | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> Callable[[type], type]:
    """Make a slotted dataclass of ``cls`` and give it ``from_dict``, ``to_dict`` and (unless frozen) ``clone``.

    ``top_level``: what the document is called when it is not a JSON object
    (a ``TypeError``; a nested one reads as its defaults, or, ``optional``,
    as ``None``). ``constants``: keys always written with these values.
    ``check``: called with the raw document before any field is read.
    """

    def make(cls: type) -> type:
        cls = dataclass(slots=True, frozen=frozen)(cls)
        wire = []
        for f in dataclasses.fields(cls):
            rule = f.metadata.get(RULE)
            if not isinstance(rule, Rule):
                raise TypeError(f"{cls.__name__}.{f.name} declares no reading rule")
            wire.append(WireField(rule.key or f.name, f.name, rule))
        extras_field = next((f.name for f in wire if isinstance(f.rule, Extras)), None)
        lay = Layout(
            fields=tuple(f for f in wire if not f.rule.header and not isinstance(f.rule, Extras)),
            header=tuple(f for f in wire if f.rule.header),
            constants=dict(constants or {}),
            extras=extras_field,
        )
        _generate(cls, tuple(wire), lay, top_level, optional, check)
        return cls

    return make
