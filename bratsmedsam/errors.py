"""Errors a user can act on. The CLI and the server show their message, never a traceback."""


class UserError(Exception):
    """A bad input or setting, described in one sentence that names the file/case and what was expected."""


class LimitError(UserError):
    """An input larger than a configured limit (the server answers 413)."""


class CaseError(UserError):
    """One study is unusable; the batch it belongs to goes on without it."""

    def __init__(self, case_id: str, reason: str):
        super().__init__(f"{case_id}: {reason}")
        self.case_id = case_id
        self.reason = reason
