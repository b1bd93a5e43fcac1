"""uvicorn on httptools and asyncio: the choice, its fallback, and real `serve` workers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pytest

from tests.helpers.processes import HTTPTOOLS_SO, worker_maps
from tests.helpers.server import Server
from zerospeech_api.appliance.http_impl import uvicorn_arguments, uvicorn_implementation

UVLOOP = "/uvloop/"


def test_httptools_on_asyncio_is_chosen_when_it_imports() -> None:
    assert uvicorn_implementation() == {"http": "httptools", "loop": "asyncio"}


def test_without_httptools_it_falls_back_to_h11_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "httptools", None)  # import httptools -> ImportError
    with caplog.at_level(logging.WARNING, logger="zerospeech_api.serve"):
        assert uvicorn_implementation() == {"http": "h11", "loop": "asyncio"}
    assert "httptools cannot be imported" in caplog.text


def test_dev_passes_the_choice_unless_the_options_are_given() -> None:
    assert uvicorn_arguments(()) == ["--loop", "asyncio", "--http", "httptools"]
    assert uvicorn_arguments(("--loop", "uvloop")) == ["--http", "httptools"]
    assert uvicorn_arguments(("--http=h11", "--reload")) == ["--loop", "asyncio"]


@pytest.mark.e2e
def test_serve_workers_run_on_httptools(make_server: Callable[..., Server]) -> None:
    server = make_server(workers=2)
    with server.client() as client:
        assert client.get("/health").status_code == 200
    maps = worker_maps(server.process.proc.pid)
    assert len(maps) == 2
    for text in maps:
        assert HTTPTOOLS_SO in text
        assert UVLOOP not in text
