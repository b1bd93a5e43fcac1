"""The supervisord config rendered from Settings, checked with supervisord's own parser."""

from __future__ import annotations

import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from zerospeech_api.appliance import supervisor
from zerospeech_api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ["/usr/bin/python3", "/opt/zero speech/zerospeech-api.pyz"]


def parse(config: Path) -> ServerOptions:
    """Load a config the way supervisord does (raises on anything it would refuse)."""
    options = ServerOptions()
    options.realize(args=["-c", str(config)])
    return options


def programs(options: ServerOptions) -> dict[str, object]:
    return {
        process.name: process
        for group in options.process_group_configs
        for process in group.process_configs
    }


def render(settings: Settings, tmp_path: Path) -> Path:
    paths = supervisor.layout(settings)
    paths.create()
    text = supervisor.render_config(
        settings, program=PROGRAM, env_file=tmp_path / "my 100% site.env", directory=tmp_path
    )
    supervisor.write_atomically(paths.config, text)
    return paths.config


def test_programs_run_this_pyz_with_the_env_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / "data dir", worker_processes=3)
    options = parse(render(settings, tmp_path))
    procs = programs(options)
    assert sorted(procs) == ["api", "worker-1", "worker-2", "worker-3"]
    env = str(tmp_path / "my 100% site.env")  # spaces and % survive quoting and expansion
    assert shlex.split(procs["api"].command) == [*PROGRAM, "--env-file", env, "serve"]
    assert shlex.split(procs["worker-2"].command) == [*PROGRAM, "--env-file", env, "worker"]
    logs = settings.data_dir.resolve() / "logs"
    assert procs["api"].stdout_logfile == str(logs / "api.log")
    assert procs["worker-2"].stdout_logfile == str(logs / "worker-2.log")
    for proc in procs.values():
        assert proc.directory == str(tmp_path)
        assert proc.autorestart and proc.stopasgroup and proc.killasgroup
        assert proc.startretries >= 5
    # supervisord must outwait gunicorn's graceful shutdown and the worker's job grace.
    assert procs["api"].stopwaitsecs > settings.graceful_timeout
    assert procs["worker-1"].stopwaitsecs > settings.worker_stop_grace_seconds


def test_control_socket_is_private_and_in_the_data_folder(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    options = parse(render(settings, tmp_path))
    run_dir = settings.data_dir.resolve() / "run"
    (server,) = options.server_configs
    assert server["file"] == str(run_dir / "supervisor.sock")
    assert server["chmod"] == 0o700
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert options.logfile == str(settings.data_dir.resolve() / "logs" / "supervisord.log")
    assert options.nodaemon


def test_no_worker_program_when_worker_processes_is_zero(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(worker_processes=0)
    assert list(programs(parse(render(settings, tmp_path)))) == ["api"]


def test_config_is_written_atomically_and_privately(tmp_path: Path) -> None:
    target = tmp_path / "run" / "supervisord.conf"
    supervisor.write_atomically(target, "one\n")
    supervisor.write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["supervisord.conf"]


def test_shipped_config_has_the_shape_of_the_generated_one() -> None:
    settings = Settings(_env_file=None, data_dir=Path("/var/lib/zerospeech/data"))  # type: ignore[call-arg]
    generated = supervisor.render_config(
        settings,
        program=["/usr/bin/python3", "/opt/zerospeech/zerospeech-api.pyz"],
        env_file=Path("/etc/zerospeech/zerospeech.env"),
        directory=Path("/var/lib/zerospeech"),
    )
    body = generated.removeprefix("\n".join(supervisor.GENERATED_HEADER))
    shipped = (ROOT / "etc" / "supervisord.conf").read_text()
    assert shipped.endswith(body), "etc/supervisord.conf drifted from render_config()"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("reload",), ["signal", "HUP", "api"]),
        (("reload", "api"), ["signal", "HUP", "api"]),
        (("restart", "api"), ["restart", "api"]),
        (("status",), ["status"]),
    ],
)
def test_ctl_reload_means_hup_to_gunicorn(args: tuple[str, ...], expected: list[str]) -> None:
    assert supervisor.ctl_args(args) == expected
