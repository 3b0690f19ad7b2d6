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


class JobFailure(Exception):
    """A run that started but failed on some rank: named rank and module, exit code 1."""

    exit_code = 1

    def __init__(self, message: str, detail: str = ""):
        self.detail = detail
        super().__init__(message)

    def line(self) -> str:
        return f"error: {self}"
