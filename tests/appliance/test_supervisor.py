"""The supervisord config rendered from Settings, checked with supervisord's own parser."""

from __future__ import annotations

import os
import pwd
import shlex
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from supervisor.options import ServerOptions

from zerospeech_api.appliance import supervisor
from zerospeech_api.files import write_atomically
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
    write_atomically(paths.config, text)
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


def test_run_as_user_is_the_user_supervisord_runs_as(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    assert parse(render(make_settings(), tmp_path)).uid is None
    options = parse(render(make_settings(run_as_user="nobody"), tmp_path))
    assert options.uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize(
    ("wanted", "euid", "current", "expected"),
    [
        ("", 1000, "zs", supervisor.UserPlan()),
        ("", 0, "root", supervisor.UserPlan(warning=supervisor.ROOT_WARNING.format(prefix="ZR_"))),
        ("root", 0, "root", supervisor.UserPlan()),
        ("zs", 0, "root", supervisor.UserPlan(switch_to="zs")),
        ("zs", 1000, "zs", supervisor.UserPlan()),
        ("1000", 1000, "zs", supervisor.UserPlan()),
        (
            "zs",
            1001,
            "ada",
            supervisor.UserPlan(
                error=supervisor.CANNOT_SWITCH.format(prefix="ZR_", wanted="zs", current="ada")
            ),
        ),
    ],
)
def test_user_plan(wanted: str, euid: int, current: str, expected: supervisor.UserPlan) -> None:
    assert supervisor.user_plan(wanted=wanted, euid=euid, current=current) == expected


def test_a_bad_run_as_user_stops_start_up_naming_it(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="run_as_user"):
        make_settings(run_as_user="bob; rm -rf /")


def test_control_problem_tells_a_stopped_supervise_from_a_running_one(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    paths = supervisor.layout(settings)
    not_running = supervisor.NOT_RUNNING.format(socket=paths.socket)
    assert supervisor.control_problem(paths.config) == not_running  # never started
    render(settings, tmp_path)
    assert supervisor.control_problem(paths.config) == not_running  # config, no socket
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(paths.socket))
        assert supervisor.control_problem(paths.config) == not_running  # a stale socket file
        server.listen()
        assert supervisor.control_problem(paths.config) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_become_user_switches_ids_groups_and_home(tmp_path: Path) -> None:
    record = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # the switch cannot be undone: do it in a child
        status = 1
        try:
            assert supervisor.become_user("nobody") is None
            assert (os.getuid(), os.geteuid()) == (record.pw_uid,) * 2
            assert (os.getgid(), os.getgroups()[0]) == (record.pw_gid,) * 2
            assert os.environ["HOME"] == record.pw_dir and os.environ["USER"] == "nobody"
            problems = supervisor.access_problems(
                "nobody",
                program=["/bin/sh"],
                env_file=None,
                data_dir=tmp_path / "data",  # in root's private test folder
                directory=Path("/"),
                shiv_root=None,
            )
            assert problems == [
                f"nobody cannot write the data folder {tmp_path / 'data'} (chown -R it)"
            ]
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert supervisor.become_user("no-such-user-here").startswith("cannot switch to user")
