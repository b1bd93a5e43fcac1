"""Start-up imports run with the cyclic garbage collector paused (zerospeech_api.appliance.startup),
and it resumes afterwards, whatever happened."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from zerospeech_api.appliance.startup import importing
from zerospeech_api.cli import LazyCommand, LazyGroup


@pytest.fixture
def collector_running() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_running")
def test_importing_pauses_the_collector_and_resumes_it() -> None:
    with importing():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_running")
def test_the_collector_resumes_when_an_import_fails() -> None:
    with pytest.raises(ImportError), importing():
        raise ImportError("broken module")
    assert gc.isenabled()


def test_a_paused_collector_stays_paused() -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        with importing():
            pass
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


@pytest.mark.usefixtures("collector_running")
def test_a_command_module_is_imported_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zr_probe_command.py").write_text(
        "import gc, click\n"
        "COLLECTING = gc.isenabled()\n"
        "@click.command()\n"
        "def probe() -> None:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    group = LazyGroup(name="zr", lazy={"probe": LazyCommand("zr_probe_command:probe", "Probe.")})
    try:
        command = group.get_command(click.Context(group), "probe")
        assert command is not None and command.name == "probe"
        assert sys.modules["zr_probe_command"].COLLECTING is False
        assert gc.isenabled()
    finally:
        sys.modules.pop("zr_probe_command", None)
