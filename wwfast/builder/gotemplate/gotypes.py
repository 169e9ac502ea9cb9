"""Python stand-ins for the Go values a text/template sees, and the Go type rules the engine needs.

Go distinguishes things Python does not: a missing map key (an *invalid* value, printed "<no value>")
from a nil interface, int from int64, a named string type (WWbool) from string, a struct from a map.
Templates print, compare and pass these to typed functions, so the difference shows in their output
and in their errors. The mapping used throughout the engine:

    Go                                  Python
    invalid reflect.Value               INVALID
    nil (interface, pointer, slice...)  None
    string / bool / int / float64       str / bool / int / float
    int64 (sprig arithmetic results)    Int64 (an int subclass)
    []T, map[K]V                        list (StrList for []string), dict (StrMap: map[string]string)
    struct, *struct                     a GoStruct subclass
    net.IP                              IP
"""


class _Invalid:
    """The zero reflect.Value: what a missing map key or field of nil data evaluates to."""

    __slots__ = ()

    def __bool__(self):
        return False

    def __repr__(self):
        return "INVALID"


INVALID = _Invalid()


class Int64(int):
    """A Go int64 (what sprig's arithmetic returns); plain Python ints are Go ints."""

    __slots__ = ()


class StrList(list):
    """A Go []string (splitList, keys, sortAlpha...); plain lists are []interface{}."""

    __slots__ = ()


class StrMap(dict):
    """A Go map[string]string (tags): a missing key indexes to "" rather than nil."""

    __slots__ = ()


class GoStruct:
    """Base of Go struct stand-ins.

    _go_type: the Go type name (for %T, typeOf and error messages); _go_fields: field names in
    declaration order (what %v prints); _go_methods: names of the methods a template may call (Python
    methods of the same name). A method wins over a field of the same name, as in Go.
    """

    __slots__ = ()
    _go_type = "struct {}"
    _go_fields = ()
    _go_methods = frozenset()
    _go_pointer = True  # printed by %v at the top level as the struct; inside containers as &{...}
    _go_kinds = {}      # name -> FIELD / METHOD0 (no parameters) / METHOD: one lookup per access

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kinds = {name: FIELD for name in cls._go_fields}
        for name in cls._go_methods:
            fn = getattr(cls, name, None)
            kinds[name] = METHOD if getattr(fn, "go_params", None) or getattr(fn, "go_variadic", None) else METHOD0
        cls._go_kinds = kinds


FIELD, METHOD0, METHOD = 0, 1, 2


class Stringer:
    """A value with a Go String() method: fmt prints go_string() wherever it appears."""

    __slots__ = ()
    _go_type = "fmt.Stringer"
    _go_kind = "string"

    def go_string(self):
        raise NotImplementedError


class IP(Stringer):
    """A Go net.IP: prints its text, "<nil>" when unset; true when set; a byte slice to the rules."""

    __slots__ = ("text",)
    _go_type = "net.IP"
    _go_kind = "slice"

    def __init__(self, text=""):
        self.text = text or ""

    def go_string(self):
        return self.text or "<nil>"

    def __bool__(self):
        return bool(self.text)

    def __len__(self):
        return 16 if self.text else 0

    def __eq__(self, other):
        return isinstance(other, IP) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return f"IP({self.text!r})"


def is_int(v):
    return type(v) is int or type(v) is Int64


# Exact Python types of Go basic values: (reflect kind, type name).
_BASIC = {str: ("string", "string"), bool: ("bool", "bool"), int: ("int", "int"), Int64: ("int64", "int64"),
          float: ("float64", "float64")}


def kind(v):
    """The Go reflect.Kind name of a value."""
    basic = _BASIC.get(type(v))
    if basic is not None:
        return basic[0]
    if v is INVALID or v is None:
        return "invalid"
    if isinstance(v, (list, tuple, bytes, bytearray)):
        return "slice"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, Stringer):
        return v._go_kind
    if isinstance(v, str):
        return "string"
    if isinstance(v, GoStruct):
        return "ptr" if v._go_pointer else "struct"
    if isinstance(v, complex):
        return "complex128"
    return "func" if callable(v) else "struct"


def type_name(v):
    """The Go type name of a value, as %T and sprig's typeOf print it."""
    basic = _BASIC.get(type(v))
    if basic is not None:
        return basic[1]
    if v is None or v is INVALID:
        return "<nil>"
    if isinstance(v, StrList):
        return "[]string"
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]string" if isinstance(v, StrMap) else "map[string]interface {}"
    if isinstance(v, GoStruct):
        return ("*" if v._go_pointer else "") + v._go_type
    if isinstance(v, (Stringer, str)):
        return getattr(v, "_go_type", "string")
    return "complex128" if isinstance(v, complex) else "func"
