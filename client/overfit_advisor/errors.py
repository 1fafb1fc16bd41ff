"""What can go wrong talking to the service, as exceptions that carry its own words."""


class AdvisorError(Exception):
    """The service refused a request: ``status`` is the HTTP status, ``message`` the service's
    explanation and ``field`` the field it named, when it named one."""

    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status
        self.message = message
        self.field = field


class AdvisorUnavailable(AdvisorError):
    """The service could not be reached, or answered with a server error: worth retrying."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(status, message)
