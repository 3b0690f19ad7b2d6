"""User-facing errors: one line, no traceback, exit code 2 at the CLI."""


class UserError(Exception):
    """An error the user can fix by changing their input (file, flag, data)."""

    exit_code = 2

    def line(self) -> str:
        return f"error: {self}"


class TopologyError(UserError):
    """`FILE: field.path: message` for a bad topology file."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(f"{where}{message}")


class ArgumentError(UserError):
    """`--flag: message` for a bad command-line argument."""

    def __init__(self, flag: str, message: str):
        self.flag, self.message = flag, message
        super().__init__(f"{flag}: {message}")
