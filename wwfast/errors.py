"""Configuration errors that name the file, line and field at fault.

Every component reports bad input through ConfigError so the user always sees
where to look, e.g.
    conf/nodes.yaml:12: nodes.n001.network devices.default.hwaddr: bad MAC "zz"
"""


class ConfigError(Exception):
    """One problem in a configuration file. `line` is 1-based (None if unknown)."""

    def __init__(self, file, line, field, message):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field or ""
        self.message = message
        super().__init__(self.__str__())

    def __str__(self):
        where = self.file or "<config>"
        if self.line:
            where += f":{self.line}"
        parts = [where]
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigErrors(ConfigError):
    """Several problems found in one pass; str() lists one per line.

    It is a ConfigError itself (carrying the first problem's location), so
    callers that catch ConfigError need no special case.
    """

    def __init__(self, errors):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.file, first.line, first.field, first.message)

    def __str__(self):
        return "\n".join(ConfigError.__str__(e) for e in self.errors)


def raise_all(errors):
    """Raise the collected errors (one as itself, several as ConfigErrors)."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


class UsageError(Exception):
    """A command asked for something impossible (unknown node, name taken, ...)."""
