"""The reading rules: how one field of a document is read, written and copied.

Each rule emits Python source for the generated methods of its document
(``fields``): ``read`` the lines that turn the raw value of a stored document
into the field's value (spec section 4), ``write`` the expression of its wire
value, ``copy`` that of an independent copy. A rule checks the exact type of
what this engine writes inline and calls the general reader of ``readers``
only for anything else, so a well-formed document costs no helper call per
field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol


class Source(Protocol):
    """What a rule may ask of the code being generated."""

    known: frozenset[str]  # every wire key of the document

    def ref(self, obj: Any, hint: str) -> str:
        """A global name of the generated code bound to ``obj``."""
        ...

    def var(self, field_name: str) -> str:
        """The local holding another field's read value (the rule lists it in ``needs``)."""
        ...

    def reader(self, doc: type) -> str:
        """The name of a nested document's generated reader, ``(data, now, *ids) -> doc | None``."""
        ...


class Rule:
    """How one field is read, written and copied; each subclass is one reading rule."""

    json: ClassVar[str]  # the JSON type the field has on the wire
    nullable: ClassVar[bool] = False
    key: str | None = None  # the wire key, when it is not the field's name
    header: bool = False  # written before the constants and the other fields (``_v``)

    @property
    def needs(self) -> tuple[str, ...]:
        """Fields whose read value this rule uses: they are read first."""
        return ()

    def read(self, v: str, name: str, src: Source) -> list[str]:
        """Lines that turn the raw value in local ``v`` into the field's value (``name``: the field)."""
        raise NotImplementedError

    def write(self, x: str, src: Source) -> str:
        """The wire value of attribute expression ``x``."""
        return x

    def copy(self, x: str, src: Source) -> str:
        """An independent copy of attribute expression ``x`` (immutable values are shared)."""
        return x


# --- the reading rules -----------------------------------------------------------


@dataclass(frozen=True)
class Text(Rule):
    default: str = ""
    nonblank: bool = False  # an empty string also reads as the default
    json: ClassVar[str] = "string"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        d = repr(self.default)
        if self.nonblank:
            return [f"if type({v}) is not str or not {v}: {v} = _str({v}, {d}) or {d}"]
        return [f"if type({v}) is not str: {v} = _str({v}, {d})"]


@dataclass(frozen=True)
class Ident(Rule):
    """A non-empty id; else the id the caller passes (the key it is stored under), or no document at all."""

    drops_document: bool = False
    json: ClassVar[str] = "string"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        if self.drops_document:
            return [f"if not isinstance({v}, str) or not {v}: return None"]
        return [f"if type({v}) is not str or not {v}: {v} = _str({v}) or {name}"]


@dataclass(frozen=True)
class OptText(Rule):
    blank_is_none: bool = False
    json: ClassVar[str] = "string"
    nullable: ClassVar[bool] = True

    def read(self, v: str, name: str, src: Source) -> list[str]:
        if self.blank_is_none:
            return [f"if type({v}) is not str or not {v}: {v} = _opt_str({v}) or None"]
        return [f"if type({v}) is not str: {v} = _opt_str({v})"]


@dataclass(frozen=True)
class Flag(Rule):
    default: bool = False
    json: ClassVar[str] = "boolean"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"if {v} is not True and {v} is not False: {v} = {self.default!r}"]


@dataclass(frozen=True)
class Choice(Rule):
    """An enum member; an unknown value reads as the default."""

    default: Enum
    json: ClassVar[str] = "string"

    @property
    def enum(self) -> type[Enum]:
        return type(self.default)

    def read(self, v: str, name: str, src: Source) -> list[str]:
        members = src.ref(self.enum._value2member_map_, "members")
        default, enum = src.ref(self.default, "default"), src.ref(self.enum, "enum")
        return [f"{v} = {members}.get({v}, {default}) if type({v}) is str else _enum({enum}, {v}, {default})"]

    def write(self, x: str, src: Source) -> str:
        return f"{x}._value_"  # a plain attribute, where .value is a descriptor call


@dataclass(frozen=True)
class Integer(Rule):
    """An integer clamped to ``low..high``; ``at_least_len_of``: never below that field's length."""

    low: int = 0
    high: int | None = None
    at_least_len_of: str | None = None
    json: ClassVar[str] = "integer"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.at_least_len_of,) if self.at_least_len_of else ()

    def read(self, v: str, name: str, src: Source) -> list[str]:
        high = "_FLOAT_MAX" if self.high is None else repr(self.high)
        lines = [
            f"if type({v}) is not int or not {self.low} <= {v} <= {high}: {v} = _int_in({v}, {self.low}, {self.high!r})"
        ]
        if self.at_least_len_of:
            other = src.var(self.at_least_len_of)
            lines.append(f"if {v} < len({other}): {v} = len({other})")
        return lines


@dataclass(frozen=True)
class Unit(Rule):
    """A confidence or rate, clamped to 0..1."""

    json: ClassVar[str] = "number"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"if type({v}) is not float or not 0.0 <= {v} <= 1.0: {v} = _unit({v})"]


@dataclass(frozen=True)
class Timestamp(Rule):
    """Unix seconds, never null: a bad one reads as now, or as field ``fallback``."""

    fallback: str | None = None
    json: ClassVar[str] = "number"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.fallback,) if self.fallback else ()

    def read(self, v: str, name: str, src: Source) -> list[str]:
        fallback = src.var(self.fallback) if self.fallback else "now"
        return [f"if type({v}) is not float or {v} - {v} != 0.0: {v} = _ts({v}, {fallback})"]


@dataclass(frozen=True)
class OptTimestamp(Rule):
    """Unix seconds or null: a bad one reads as null (a NaN breaks every cooldown comparison)."""

    json: ClassVar[str] = "number"
    nullable: ClassVar[bool] = True

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"if {v} is not None and (type({v}) is not float or {v} - {v} != 0.0): {v} = _opt_ts({v})"]


@dataclass(frozen=True)
class Duration(Rule):
    """Seconds between two stamp fields when not a number; never negative, 2 decimals."""

    start: str
    end: str
    json: ClassVar[str] = "number"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.start, self.end)

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"{v} = _duration({v}, {src.var(self.start)}, {src.var(self.end)})"]


@dataclass(frozen=True)
class Strings(Rule):
    """Strings only, insertion order, no duplicates, blanks dropped."""

    json: ClassVar[str] = "array"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"{v} = _str_list({v})"]

    def write(self, x: str, src: Source) -> str:
        return f"list({x})"

    def copy(self, x: str, src: Source) -> str:
        return f"list({x})"


@dataclass(frozen=True)
class FreeForm(Rule):
    """A free-form object kept as it is, but for non-finite floats (which JSON cannot hold)."""

    json: ClassVar[str] = "object"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"{v} = _json_safe(_dict({v}))"]

    def write(self, x: str, src: Source) -> str:
        return f"_json_safe({x})"

    def copy(self, x: str, src: Source) -> str:
        return f"_json_safe({x})"


@dataclass(frozen=True)
class Nested(Rule):
    """One nested document; ``optional``: or null, which is also what a non-object reads as."""

    doc: type
    optional: bool = False
    json: ClassVar[str] = "object"

    @property
    def nullable(self) -> bool:  # type: ignore[override]
        return self.optional

    def read(self, v: str, name: str, src: Source) -> list[str]:
        read = src.reader(self.doc)
        if self.optional:
            return [f"{v} = {read}({v}, now) if isinstance({v}, dict) else None"]
        return [f"{v} = {read}({v}, now)"]

    def write(self, x: str, src: Source) -> str:
        return f"{x}.to_dict() if {x} is not None else None" if self.optional else f"{x}.to_dict()"

    def copy(self, x: str, src: Source) -> str:
        return f"{x}.clone() if {x} is not None else None" if self.optional else f"{x}.clone()"


@dataclass(frozen=True)
class Map(Rule):
    """An object of nested documents by id; each learns its id from its key when it lacks one."""

    doc: type
    json: ClassVar[str] = "object"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        read = src.reader(self.doc)
        return [
            f"if isinstance({v}, dict) and {v}:",
            "    m = {}",
            f"    for k, e in {v}.items():",
            "        if type(k) is not str: k = str(k)",
            f"        m[k] = {read}(e, now, k)",
            f"    {v} = m",
            "else:",
            f"    {v} = {{}}",
        ]

    def write(self, x: str, src: Source) -> str:
        return f"{{k: e.to_dict() for k, e in {x}.items()}}"

    def copy(self, x: str, src: Source) -> str:
        return f"{{k: e.clone() for k, e in {x}.items()}}"


@dataclass(frozen=True)
class Entries(Rule):
    """A list of nested documents: unreadable ones dropped, the first of each ``unique`` kept, the last ``keep``."""

    doc: type
    unique: str
    keep: int
    json: ClassVar[str] = "array"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        read = src.reader(self.doc)
        return [
            f"if isinstance({v}, list) and {v}:",
            "    out, seen = [], set()",
            f"    for item in {v}:",
            f"        e = {read}(item, now)",
            f"        if e is not None and e.{self.unique} not in seen:",
            f"            seen.add(e.{self.unique})",
            "            out.append(e)",
            f"    {v} = out[-{self.keep}:]",
            "else:",
            f"    {v} = []",
        ]

    def write(self, x: str, src: Source) -> str:
        return f"[e.to_dict() for e in {x}]"

    def copy(self, x: str, src: Source) -> str:
        # Frozen entries never change: copies of the list share them.
        frozen = self.doc.__dataclass_params__.frozen  # type: ignore[attr-defined]
        return f"list({x})" if frozen else f"[e.clone() for e in {x}]"


@dataclass(frozen=True)
class Version(Rule):
    """The lenient schema version of a snapshot: any integer, else ``default``; written first."""

    default: int
    key: str | None = "_v"
    header: bool = True
    json: ClassVar[str] = "integer"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"if type({v}) is not int: {v} = _version({v}, {self.default!r})"]


@dataclass(frozen=True)
class Extras(Rule):
    """Unknown top-level keys, kept and written back (before the known ones) so a newer writer's survive."""

    json: ClassVar[str] = "object"

    def read(self, v: str, name: str, src: Source) -> list[str]:
        return [f"{v} = _extras(data, {src.ref(src.known, 'known')})"]

    def copy(self, x: str, src: Source) -> str:
        return f"_json_safe({x})"
