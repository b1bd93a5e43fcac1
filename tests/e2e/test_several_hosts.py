"""Two API hosts on one PostgreSQL and one shared data folder, nginx round robin in front (the
shipped etc/nginx/zerospeech-api-cluster.conf), a worker on the second host only.

Each host is its own `serve` of the built pyz, extracted into the host's own SHIV_ROOT (as on two
machines), with its own .env, working folder and ZR_NODE_NAME; both are started at the same
moment on a fresh database. Commands run by the operator (`init`, `migrate`) use the source tree.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from tests.conftest import require_binary
from tests.helpers.cli import cli_process
from tests.helpers.factories import (
    bearer,
    make_archive,
    make_benchmark,
    make_evaluator,
    make_user,
    multipart_body,
)
from tests.helpers.nginx import nginx_argv, render_cluster_site, render_nginx
from tests.helpers.postgres import PostgresCluster
from tests.helpers.processes import Process, cli_command, free_port, wait_for, wait_until_responds
from tests.helpers.pyz import Built
from tests.helpers.server import Server, write_env
from tests.helpers.zrc import ZrcDriver
from zerospeech_api.cluster import FOLDER_ID_KEY, MARKER_NAME
from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import head_revision
from zerospeech_api.db.tables import ClusterSetting, Job, SubmissionEvent, WorkerHeartbeat
from zerospeech_api.settings import Settings, load_settings

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.xdist_group("several-hosts")]

NODES = ("web1", "web2")
PART = 20_000


@dataclass
class Hosts:
    """The cluster: the hosts' .env files and servers, nginx, the worker on web2."""

    root: Path
    envs: list[Path]
    servers: list[Server]
    nginx_url: str
    upstream_log: Path
    settings: Settings
    db: Database
    pyz: Path
    processes: list[Process] = field(default_factory=list)

    def host_command(self, host: int) -> list[str]:
        """The pyz as `host` runs it: `python zerospeech-api.pyz --env-file <its .env>`."""
        return [sys.executable, str(self.pyz), "--env-file", str(self.envs[host])]

    def start_server(self, host: int) -> Server:
        return start_host(self.pyz, self.envs[host])

    def token(self) -> tuple[str, str]:
        """(username, bearer token) of a new verified user."""
        user = make_user(self.db, self.settings)
        return user.username, bearer(self.db, self.settings, user)["Authorization"].split()[1]

    def process(self, argv: list[str], name: str, *, host: int | None = None) -> Process:
        """A process of the cluster; with `host`, it extracts the pyz where that host does."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
        if host is not None:
            env["SHIV_ROOT"] = str(shiv_root(self.envs[host]))
        process = Process(argv, cwd=self.root, env=env, log=self.root / f"{name}.log")
        self.processes.append(process)
        return process


def host_env(folder: Path, values: dict[str, str], node: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_env(folder / "host.env", {**values, "ZR_NODE_NAME": node})


def shiv_root(env_file: Path) -> Path:
    """Where the host of `env_file` extracts the pyz: a folder of its own, not the shared one."""
    return env_file.parent / "shiv"


def start_host(pyz: Path, env_file: Path) -> Server:
    command = [sys.executable, str(pyz)]
    env = {"SHIV_ROOT": str(shiv_root(env_file))}
    return Server(env_file, workers=2, timeout=60, command=command, env=env)


@pytest.fixture(scope="module")
def hosts(
    postgres_cluster: PostgresCluster, built: Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hosts]:
    nginx = require_binary("nginx")
    root = tmp_path_factory.mktemp("cluster")
    url = postgres_cluster.create_database(f"zr_cluster_{secrets.token_hex(4)}")  # fresh
    common = {
        "ZR_DATA_DIR": str(root / "shared"),  # the one shared folder
        "ZR_DATABASE_URL": url,
        "ZR_SECRET_KEY": secrets.token_urlsafe(48),
        "ZR_ARGON2_TIME_COST": "1",
        "ZR_ARGON2_MEMORY_KIB": "8192",
        "ZR_JOB_LEASE_SECONDS": "6",
        "ZR_WORKER_POLL_SECONDS": "0.2",
        "ZR_UPLOAD_RECOVERY_SECONDS": "1",
        "ZR_SMTP_HOST": "",
    }
    envs = [host_env(root / node, common, node) for node in NODES]
    # Both hosts at the same moment on the fresh database: migrations and the folder's id once.
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(lambda env: start_host(built.pyz, env), envs))
    cli_process(root, "init", env_file=envs[0], check=True)  # the built-in rows (`scores`)
    folder = root / "nginx"
    folder.mkdir()
    port = free_port()
    upstream_log = folder / "upstreams.log"
    config = render_nginx(
        folder,
        nginx_port=port,
        api_port=0,
        site=render_cluster_site(folder, nginx_port=port, api_ports=[s.port for s in servers]),
        extra=f"    log_format upstreams '$request_method $uri $upstream_addr';\n"
        f"    access_log {upstream_log} upstreams;",
    )
    settings = load_settings(envs[0])
    db = Database(url)
    cluster = Hosts(
        root, envs, servers, f"http://127.0.0.1:{port}", upstream_log, settings, db, built.pyz
    )
    try:
        proxy = cluster.process(nginx_argv(nginx, config), "nginx")
        wait_until_responds(f"{cluster.nginx_url}/health", proxy)
        cluster.process([*cluster.host_command(1), "worker"], "worker-web2", host=1)
        yield cluster
    finally:
        for process in cluster.processes:
            process.stop()
        for server in cluster.servers:
            server.stop()
        db.dispose()


def test_both_hosts_started_together_on_a_fresh_database(hosts: Hosts) -> None:
    marker = (hosts.settings.data_dir / MARKER_NAME).read_text().strip()
    with hosts.db.session(read_only=True) as session:
        row = session.get(ClusterSetting, FOLDER_ID_KEY)
        versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
    assert row is not None and row.value == marker
    assert [version[0] for version in versions] == [head_revision()]
    for node in NODES:
        assert (hosts.settings.data_dir / "nodes" / node / "run" / "metrics").is_dir()
    for server in hosts.servers:
        assert server.process.alive() and "Traceback" not in server.output()
    # Each host runs the pyz from its own extraction, none in the shared folder.
    for env_file in hosts.envs:
        assert any(shiv_root(env_file).iterdir()), f"no extraction in {shiv_root(env_file)}"
    assert not list(hosts.settings.data_dir.rglob("site-packages"))


def test_an_upload_through_nginx_is_joined_evaluated_and_seen_alike_from_both_hosts(
    hosts: Hosts, tmp_path: Path
) -> None:
    username, token = hosts.token()
    benchmark = make_benchmark(hosts.db)
    archive = make_archive(tmp_path / "sub.zip", payload_bytes=8 * PART)
    with ZrcDriver(
        hosts.nginx_url, tmp_path / "zrc", token=token, username=username, part_size=PART
    ) as zrc:
        submission_id = zrc.submit(archive, benchmark)
        assert zrc.wait_status("completed", "failed", "invalid", timeout=120) == "completed"
    # Round robin spread the parts over both hosts, and they were joined all the same.
    uploads = [line for line in hosts.upstream_log.read_text().splitlines() if "/content/" in line]
    assert {line.rsplit(" ", 1)[1] for line in uploads} >= {
        f"127.0.0.1:{s.port}" for s in hosts.servers
    }
    answers = []
    for server in hosts.servers:
        with server.client(headers={"Authorization": f"Bearer {token}"}) as http:
            scores = http.get(f"/submissions/{submission_id}/scores")
            log = http.get(f"/submissions/{submission_id}/log")
        assert scores.status_code == 200 and log.status_code == 200
        assert scores.json()["entry"] is not None
        answers.append((scores.json(), log.json()))
    assert answers[0] == answers[1]
    with hosts.db.session(read_only=True) as session:
        node = session.scalar(select(WorkerHeartbeat.node))
    assert node == "web2"  # evaluated by the only worker, on the other host than web1


def test_a_worker_whose_clock_runs_ahead_steals_no_job(hosts: Hosts, tmp_path: Path) -> None:
    faketime = require_binary("faketime")
    username, token = hosts.token()
    name = f"slow-{secrets.token_hex(3)}"
    make_evaluator(
        hosts.db, name, "sh -c 'sleep 15 && cp {input}/scores/leaderboard.json {output}'"
    )
    benchmark = make_benchmark(hosts.db, evaluator=name)
    archive = make_archive(tmp_path / "slow.zip", payload_bytes=2 * PART)
    with ZrcDriver(
        hosts.nginx_url, tmp_path / "zrc", token=token, username=username, part_size=PART
    ) as zrc:
        submission_id = zrc.submit(archive, benchmark)
        zrc.wait_status("evaluating", timeout=60)  # claimed by web2's healthy worker
        # A worker on web1 whose clock is 40 s ahead: every lease (6 s) looks expired to it.
        skewed = hosts.process(
            [faketime, "-f", "+40s", *hosts.host_command(0), "worker"],
            "worker-web1-skewed",
            host=0,
        )

        def skewed_worker_polls() -> bool:
            with hosts.db.session(read_only=True) as session:
                nodes = session.scalars(select(WorkerHeartbeat.node)).all()
            return "web1" in nodes

        wait_for(skewed_worker_polls, timeout=60, what="the skewed worker's heartbeat")
        assert zrc.wait_status("completed", "failed", "invalid", timeout=120) == "completed"
        skewed.stop()
    with hosts.db.session(read_only=True) as session:
        claims = session.scalars(select(Job.claims).where(Job.submission_id == submission_id))
        messages = session.scalars(
            select(SubmissionEvent.message).where(SubmissionEvent.submission_id == submission_id)
        ).all()
    assert list(claims) == [1]
    assert not [m for m in messages if "re-queued" in m or "lease" in m]
    assert any("claimed by worker web2:" in m for m in messages)


def test_read_only_is_switched_for_the_whole_cluster(hosts: Hosts) -> None:
    def answers() -> list[int]:
        return [httpx.post(f"{s.url}/auth/signup", json={}).status_code for s in hosts.servers]

    assert answers() == [400, 400]
    switched = cli_process(hosts.root, "read-only", "on", env_file=hosts.envs[0])
    assert switched.returncode == 0, switched.stderr
    try:
        wait_for(lambda: answers() == [423, 423], timeout=15, what="every host read-only")
        assert httpx.get(f"{hosts.nginx_url}/health").status_code == 200
    finally:
        cli_process(hosts.root, "read-only", "off", env_file=hosts.envs[1], check=True)
    wait_for(lambda: answers() == [400, 400], timeout=15, what="every host writable again")


def test_concurrent_migrations_all_succeed(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres_cluster.create_database(f"zr_migrate_{secrets.token_hex(4)}")
    env = write_env(
        tmp_path / "migrate.env",
        {"ZR_DATA_DIR": str(tmp_path / "data"), "ZR_DATABASE_URL": url},
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    argv = [*cli_command(), "--env-file", str(env), "migrate"]
    runs = [
        subprocess.Popen(argv, env=base, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    assert all(f"database at revision {head_revision()}" in out for out in outputs)
    db = Database(url)
    try:
        with db.session(read_only=True) as session:
            versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [row[0] for row in versions] == [head_revision()]
    finally:
        db.dispose()


def test_a_host_with_a_wrong_or_local_folder_refuses_to_start(hosts: Hosts, tmp_path: Path) -> None:
    local = {**load_env(hosts.envs[0]), "ZR_DATA_DIR": str(tmp_path / "local")}
    env = write_env(tmp_path / "local.env", {**local, "ZR_NODE_NAME": "web3"})
    bind = f"127.0.0.1:{free_port()}"
    result = cli_process(tmp_path, "serve", "--bind", bind, env_file=env, timeout=60)
    assert result.returncode == 1
    assert f"has no {MARKER_NAME}" in result.stderr and "mount the shared data folder" in (
        result.stderr
    )


def test_a_process_older_than_the_schema_refuses_to_start(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres_cluster.create_database(f"zr_newer_{secrets.token_hex(4)}")
    env = write_env(
        tmp_path / "old.env",
        {
            "ZR_DATA_DIR": str(tmp_path / "data"),
            "ZR_DATABASE_URL": url,
            "ZR_SECRET_KEY": secrets.token_urlsafe(48),
        },
    )
    cli_process(tmp_path, "migrate", env_file=env, check=True)
    db = Database(url)
    try:
        with db.transaction() as session:  # what a newer build's migration leaves
            session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        db.dispose()
    for command in (["serve", "--bind", f"127.0.0.1:{free_port()}"], ["worker", "--once"]):
        result = cli_process(tmp_path, *command, env_file=env, timeout=60)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "revision 9999, newer than this build" in line and "install the same new" in line


def test_a_host_restarted_during_another_hosts_slow_upload_removes_none_of_its_files(
    hosts: Hosts, tmp_path: Path
) -> None:
    username, token = hosts.token()
    benchmark = make_benchmark(hosts.db, auto_eval=False)
    archive = make_archive(tmp_path / "big.zip", payload_bytes=2 * PART)
    web1, web2 = hosts.servers
    with ZrcDriver(
        web1.url, tmp_path / "zrc", token=token, username=username, part_size=PART
    ) as zrc:
        zrc.benchmark_info(benchmark)
        zrc.create_model()
        parts = zrc.prepare(archive)
        submission_id = zrc.create_submission(benchmark)["submission_id"]
        first = parts[0]
        data = (Path(zrc.state.parts_dir) / first.filename).read_bytes()
    body, content_type = multipart_body(files={"file": (first.filename, data)})
    go_on = threading.Event()

    def slowly() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        go_on.wait(120)
        yield body[len(body) // 2 :]

    answer: list[httpx.Response] = []

    def send() -> None:
        answer.append(
            httpx.post(
                f"{web1.url}/submissions/{submission_id}/content/add",
                params={"part_name": first.filename},
                content=slowly(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": content_type,
                    "Content-Length": str(len(body)),
                },
                timeout=120,
            )
        )

    sender = threading.Thread(target=send)
    sender.start()
    try:
        tmp1 = hosts.settings.data_dir / "nodes" / "web1" / "tmp"
        in_flight = wait_for(
            lambda: list(tmp1.glob("*.tmp")) if tmp1.is_dir() else [],
            timeout=30,
            what="web1's temp file of the part in flight",
        )
        # web2 restarts (its start-up sweeps temp files and orphans) while web1 still streams.
        web2.stop()
        hosts.servers[1] = hosts.start_server(1)
        assert all(path.exists() for path in in_flight)
    finally:
        go_on.set()
        sender.join(120)
    assert answer and answer[0].status_code == 200, answer and answer[0].text
    assert answer[0].json()["remaining"] == [p.filename for p in parts[1:]]


def load_env(path: Path) -> dict[str, str]:
    """The values of a .env written by `write_env`."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)
