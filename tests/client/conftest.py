"""What the client tests share: a real server process per test module, quick retries, and one
thread for the framework trainings."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.servers import served

# Retry fast and wait long at the end: the tests start and stop servers under the client.
FAST_RETRY: dict[str, Any] = {"retry_s": (0.05, 0.2), "finish_timeout_s": 30.0}


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``advisor serve`` on a SQLite file of this test module's own."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with served(tmp_path_factory.mktemp(name) / f"{name}.db") as url:
        yield url


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train several times faster on one thread than on two contended cores, and
    the server keeps a core; only where torch is already loaded (the client itself never is)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def starlette_untouched() -> Iterator[None]:
    """Importing fastai imports fasthtml, which rewrites Starlette's URL convertors for the
    whole process (a path may no longer hold "/"), and the service's pages, tested in the same
    process, build static URLs with them: put Starlette back as it was."""
    from starlette import convertors

    types = dict(convertors.CONVERTOR_TYPES)
    regex, to_string = convertors.StringConvertor.regex, convertors.StringConvertor.to_string
    try:
        yield
    finally:
        convertors.CONVERTOR_TYPES.clear()
        convertors.CONVERTOR_TYPES.update(types)
        convertors.StringConvertor.regex = regex
        convertors.StringConvertor.to_string = to_string  # type: ignore[method-assign]
