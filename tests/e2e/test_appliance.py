"""The built pyz as an operator runs it: build (reproducible, offline), start-up from odd places,
`supervise` behind the shipped nginx config, kills and reloads under load, offline docs in
headless Chromium, the systemd unit.

The pyz is built once per session from a snapshot of the sources (and reused from dist/test-cache
while the sources are unchanged). The appliance (supervisord + gunicorn + an evaluation worker +
nginx) is started once for this module; each disruptive test leaves it healthy again.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from supervisor.xmlrpc import SupervisorTransport

from tests.conftest import missing_tool, require_binary
from tests.helpers.factories import make_archive
from tests.helpers.nginx import nginx_argv, render_nginx
from tests.helpers.outbox import outbox_messages
from tests.helpers.processes import Process, free_port, wait_for, wait_until_responds
from tests.helpers.pyz import ROOT, Built, Load, pyz_env, run_pyz
from tests.helpers.server import write_env
from tests.helpers.zrc import ZrcDriver
from zerospeech_api import __version__

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough test password"


def test_offline_rebuild_from_a_wheelhouse_is_byte_identical(built: Built, tmp_path: Path) -> None:
    """packaging/wheelhouse.sh, then build.sh --wheelhouse with no network at all (own network
    namespace): same sources + same lock give the same bytes as the session's build."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHON=sys.executable)  # only the lock's sources
    wheelhouse = tmp_path / "wheelhouse"
    download = subprocess.run(
        [str(built.sources / "packaging" / "wheelhouse.sh"), str(wheelhouse)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert download.returncode == 0, download.stderr[-3000:]
    offline = ["unshare", "--net"]
    if subprocess.run([*offline, "true"], capture_output=True).returncode != 0:
        missing_tool("unshare --net is not permitted here")
    rebuilt = tmp_path / "rebuilt.pyz"
    result = subprocess.run(
        [*offline, str(built.sources / "build.sh"), "--wheelhouse", str(wheelhouse)]
        + ["--output", str(rebuilt)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == (
        hashlib.sha256(built.pyz.read_bytes()).hexdigest()
    )


def test_version_prints_the_build_id(built: Built, tmp_path: Path) -> None:
    with zipfile.ZipFile(built.pyz) as archive:
        environment = json.loads(archive.read("environment.json"))
    result = run_pyz(built.pyz, "version", cwd=tmp_path, env=pyz_env(tmp_path / "shiv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"zerospeech-api {__version__} (build {environment['build_id'][:12]})"
    )


IMPORTS = """
import importlib.metadata, sys, fastapi, opentelemetry.trace, sqlalchemy, zerospeech_api
import sqlalchemy.engine._row_cy, httptools.parser.parser, pydantic_core._pydantic_core
for module in (fastapi, opentelemetry.trace, sqlalchemy, zerospeech_api):
    print(module.__name__, type(module.__spec__.loader).__name__)
print(importlib.metadata.version("fastapi"), importlib.metadata.version("opentelemetry-api"))
sys.modules["_zerospeech_boot"].finish_extraction()  # a first run: it may still extract
for module in (sqlalchemy.engine._row_cy, httptools.parser.parser, pydantic_core._pydantic_core):
    print(module.__name__, module.__file__)
"""


def test_pure_python_packages_are_imported_from_the_zip(built: Built, tmp_path: Path) -> None:
    """Only what must be a real file is extracted; the rest, bytecode beside it, stays zipped."""
    with zipfile.ZipFile(built.pyz) as archive:
        names = set(archive.namelist())
        source = archive.read("fastapi/routing.py")
        pyc = archive.read("fastapi/routing.pyc")
    assert "site-packages/fastapi/routing.py" not in names
    assert "opentelemetry/" in names  # a folder entry: zipimport needs it for namespace packages
    assert pyc[4:8] == (1).to_bytes(4, "little")  # unchecked-hash bytecode...
    assert pyc[8:16] == importlib.util.source_hash(source)  # ...of exactly this source
    # Extension modules (not the rest of their packages), packages that read their own files
    # and the data folders of this app are extracted, start-up bytecode of the scripts on disk
    # included (alembic runs the migrations by path); a tenth of the files, since each one
    # extracted costs a file creation. The app's code is zipped.
    assert "site-packages/sqlalchemy/engine/base.py" not in names
    assert "sqlalchemy/engine/base.pyc" in names
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert f"site-packages/httptools/parser/parser{suffix}" in names
    assert "site-packages/zerospeech_api/templates/base.html" in names
    assert "site-packages/zerospeech_api/app.py" not in names
    assert "zerospeech_api/app.pyc" in names
    tag = sys.implementation.cache_tag
    migration = "site-packages/zerospeech_api/db/migrations/versions"
    assert f"{migration}/__pycache__/0001_initial.{tag}.pyc" in names
    extracted = [name for name in names if name.startswith("site-packages/")]
    assert len(extracted) < len(names) / 10
    # The bytecode read at every start is stored, not deflated (see finish_pyz.py).
    with zipfile.ZipFile(built.pyz) as archive:
        assert archive.getinfo("zerospeech_api/app.pyc").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("fastapi/routing.pyc").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("fastapi/routing.py").compress_type == zipfile.ZIP_DEFLATED

    script = tmp_path / "imports.py"
    script.write_text(IMPORTS)
    env = pyz_env(tmp_path / "shiv", SHIV_INTERPRETER="1")
    result = run_pyz(built.pyz, str(script), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "fastapi SingleReadZipImporter",  # packaging/pyz_imports.py: one read per module
        "opentelemetry.trace SingleReadZipImporter",
        "sqlalchemy SingleReadZipImporter",
        "zerospeech_api SingleReadZipImporter",
    ]
    assert lines[4].split() == [
        importlib.metadata.version("fastapi"),
        importlib.metadata.version("opentelemetry-api"),
    ]
    # The compiled parts of zipped packages are in use, loaded from the extraction folder (on
    # this first run as soon as each was written, maybe from its temporary name: they name
    # the final folder once it is in place).
    (folder,) = (tmp_path / "shiv").glob("zerospeech-api*.pyz_*")
    for line in lines[5:8]:
        _name, location = line.split()
        assert location.startswith(f"{folder}/site-packages/"), line
        assert Path(location).is_file()


def test_runs_from_a_path_with_spaces_and_a_read_only_directory(
    built: Built, tmp_path: Path
) -> None:
    folder = tmp_path / "read only" / "zero speech"
    folder.mkdir(parents=True)
    pyz = folder / "zerospeech-api.pyz"
    shutil.copy2(built.pyz, pyz)
    env_file = write_env(
        tmp_path / "site.env",
        {"ZR_DATA_DIR": str(tmp_path / "data"), "ZR_SECRET_KEY": secrets.token_urlsafe(48)},
    )
    env = pyz_env(tmp_path / "shiv root")
    script = 'cd "$1" && shift && "$@" && ! touch probe 2>/dev/null'
    if os.geteuid() == 0:  # root writes through mode bits: make the folder a read-only mount
        if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
            missing_tool("unshare --mount is not permitted here")
        script = f'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && {script}'
        wrapper = ["unshare", "--mount", "sh", "-c", script, "sh", str(folder)]
    else:
        folder.chmod(0o555)
        wrapper = ["sh", "-c", script, "sh", str(folder)]
    try:
        for args in (
            ["version"],
            ["--env-file", str(env_file), "init"],
            ["--env-file", str(env_file), "check"],
        ):
            # Started through its shebang, from inside the read-only folder.
            result = subprocess.run(
                [*wrapper, "./zerospeech-api.pyz", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        assert "check: ok" in result.stdout
    finally:
        folder.chmod(0o755)
    assert not (folder / "probe").exists()


def test_two_processes_starting_at_once_extract_once(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "empty shiv root"
    env = pyz_env(root)
    procs = [
        subprocess.Popen(
            [sys.executable, str(built.pyz), "version"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.startswith(f"zerospeech-api {__version__}")
    extracted = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    assert len(extracted) == 1 and not extracted[0].endswith(".tmp"), extracted


def test_systemd_unit_is_accepted_by_systemd_analyze(built: Built, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    unit = (ROOT / "etc" / "systemd" / "zerospeech-api.service").read_text()
    assert "/opt/zerospeech/zerospeech-api.pyz" in unit and "/usr/bin/python3" in unit
    unit = unit.replace("/opt/zerospeech/zerospeech-api.pyz", str(built.pyz))
    unit = unit.replace("/usr/bin/python3", sys.executable)
    path = tmp_path / "zerospeech-api.service"
    path.write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown or misspelt settings: any line about our unit is a fail.
    assert "zerospeech-api.service" not in result.stderr, result.stderr


@pytest.mark.postgres
def test_the_pyz_runs_on_postgresql(built: Built, tmp_path: Path, postgres_cluster: Any) -> None:
    """psycopg (binary) is inside the pyz: init, check and backup against a real server."""
    url = postgres_cluster.create_database(f"zr_pyz_{secrets.token_hex(4)}")
    env_file = write_env(
        tmp_path / "pg.env", {"ZR_DATA_DIR": str(tmp_path / "data"), "ZR_DATABASE_URL": url}
    )
    env = pyz_env(tmp_path / "shiv")
    for command in ("init", "check"):
        result = run_pyz(built.pyz, "--env-file", str(env_file), command, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "postgresql+psycopg://postgres@127.0.0.1" in result.stdout
    backup = run_pyz(
        built.pyz, "--env-file", str(env_file), "backup", str(tmp_path / "b"), cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert backup.returncode == 1 and "pg_dump" in backup.stderr


# --- the running appliance ----------------------------------------------------------------------
@dataclass
class Appliance:
    root: Path
    pyz: Path
    env_file: Path
    env: dict[str, str]
    api_port: int
    nginx_port: int
    processes: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def cli(self, *args: str, input: str | None = None) -> str:
        result = run_pyz(
            self.pyz, "--env-file", str(self.env_file), *args, cwd=self.root, env=self.env,
            input=input,
        )  # fmt: skip
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result.stdout

    def pid(self, program: str) -> int:
        """The program's pid per supervisord (0 while it is not running), asked over its socket
        with XML-RPC: polling through `ctl` would start a Python process per look."""
        socket = self.data / "run" / "supervisor.sock"
        transport = SupervisorTransport(None, None, f"unix://{socket}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return int(proxy.supervisor.getProcessInfo(program)["pid"])
        finally:
            transport.close()

    def gunicorn_workers(self) -> set[int]:
        master = self.pid("api")
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            return set()
        return {int(pid) for pid in children}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


@pytest.fixture(scope="module")
def appliance(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """`supervise` (gunicorn x2 workers, one evaluation worker) behind nginx, from the pyz."""
    nginx = require_binary("nginx")
    root = tmp_path_factory.mktemp("appliance") / "zero speech"
    (root / "app dir").mkdir(parents=True)
    pyz = root / "app dir" / "zerospeech-api.pyz"
    shutil.copy2(built.pyz, pyz)
    api_port, nginx_port = free_port(), free_port()
    env_file = write_env(
        root / "site.env",
        {
            "ZR_DATA_DIR": str(root / "data"),
            "ZR_BIND": f"127.0.0.1:{api_port}",
            "ZR_BASE_URL": f"http://127.0.0.1:{nginx_port}",
            "ZR_WORKERS": "2",
            "ZR_WORKER_PROCESSES": "1",
            "ZR_GRACEFUL_TIMEOUT": "20",
            "ZR_JOB_LEASE_SECONDS": "5",
            "ZR_WORKER_POLL_SECONDS": "0.2",
            "ZR_WORKER_STOP_GRACE_SECONDS": "5",
            "ZR_LEADERBOARD_MAX_AGE": "2",
            "ZR_ARGON2_TIME_COST": "1",
            "ZR_ARGON2_MEMORY_KIB": "8192",
        },
    )
    app = Appliance(root, pyz, env_file, pyz_env(root / "shiv"), api_port, nginx_port)
    app.cli("init")
    try:
        supervise = Process(
            [sys.executable, str(pyz), "--env-file", str(env_file), "supervise"],
            cwd=root,
            env=app.env,
            log=root / "supervise.log",
        )
        app.processes.append(supervise)
        wait_until_responds(f"{app.api_url}/health", supervise, timeout=90)
        folder = tmp_path_factory.mktemp("nginx")
        config = render_nginx(folder, nginx_port=nginx_port, api_port=api_port)
        proxy = Process(
            nginx_argv(nginx, config),
            cwd=folder,
            env=dict(os.environ),
            log=folder / "nginx.out",
        )
        app.processes.append(proxy)
        wait_until_responds(f"{app.url}/health", proxy)
        yield app
    finally:
        for process in reversed(app.processes):
            process.stop(timeout=60)


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting for its (adoptive) parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def participant(app: Appliance, tmp_path: Path, name: str) -> ZrcDriver:
    """A verified user (created with the pyz's admin CLI) and a zrc driver through nginx."""
    app.cli(
        "users", "create", name, "--email", f"{name}@example.org", "--first-name", "Ada",
        "--last-name", "Lovelace", "--affiliation", "Engines", "--password-stdin", "--verified",
        input=PASSWORD + "\n",
    )  # fmt: skip
    return ZrcDriver(
        app.url, tmp_path / f"zrc-{name}", username=name, password=PASSWORD, part_size=64_000
    )


def slow_part(driver: ZrcDriver, benchmark: str, tmp_path: Path) -> tuple[threading.Thread, dict]:
    """Register a submission and start sending its first part slowly (about 3 s) in a thread."""
    driver.login()
    driver.create_model()
    driver.prepare(make_archive(tmp_path / "slow.zip", payload_bytes=150_000))
    driver.create_submission(benchmark)
    part = driver.pending()[0]
    data = (Path(driver.state.parts_dir) / part.filename).read_bytes()
    boundary = secrets.token_hex(8)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{part.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    started = threading.Event()
    outcome: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield head
        for offset in range(0, len(data), 2_000):
            started.set()
            time.sleep(0.1)
            yield data[offset : offset + 2_000]
        yield tail

    def send() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{driver.base_url}/submissions/{driver.state.submission_id}/content/add",
                params={"part_name": part.filename},
                content=body(),
                headers={
                    **driver.headers,
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + len(data) + len(tail)),
                },
                timeout=60,
            )
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)
        driver.state.uploaded.append(part.filehash)

    thread = threading.Thread(target=send)
    thread.start()
    started.wait(10)
    return thread, outcome


def part_accepted(thread: threading.Thread, outcome: dict) -> None:
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["response"].status_code == 200, outcome["response"].text


def finish_upload(driver: ZrcDriver, thread: threading.Thread, outcome: dict) -> None:
    part_accepted(thread, outcome)
    driver.upload()
    assert driver.wait_status("uploaded", "queued", "evaluating", "completed") != "uploading"


def test_participant_flow_through_nginx(appliance: Appliance, tmp_path: Path) -> None:
    """Signup and e-mail verification over HTTP, a multi-part zrc upload, evaluation by the
    worker, and the leaderboard read through nginx's cache, fresh within max-age."""
    app = appliance
    app.cli("benchmarks", "create", "flow-bench", "--label", "Flow", "--url", "https://e.org")
    app.cli(
        "leaderboards", "create", "flow-lexical", "--benchmark", "flow-bench",
        "--sort-key", "scores.lexical.all.test",
    )  # fmt: skip
    with app.client() as http:
        assert http.get("/").json()["version"] == __version__
        signup = {
            "username": "ada",
            "email": "ada@example.org",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "affiliation": "Analytical Engines Ltd",
            "password": PASSWORD,
        }
        assert http.post("/auth/signup", json=signup).status_code == 200, signup
        mails = wait_for(lambda: outbox_messages(app.data), what="the verification mail")
        token = re.search(r"/page/verify\?token=([\w.~-]+)", mails[0]["body"]).group(1)
        assert http.post("/auth/verify", json={"token": token}).status_code == 200

        board = "/leaderboards/flow-lexical/json"
        first = http.get(board)
        assert first.status_code == 200 and first.json()["data"] == []
        wait_for(lambda: http.get(board).headers["x-cache-status"] == "HIT", what="a cache hit")

        driver = ZrcDriver(
            app.url, tmp_path / "zrc", username="ada", password=PASSWORD, part_size=40_000
        )
        with driver:
            archive = make_archive(tmp_path / "sub.zip", payload_bytes=100_000)
            submission = driver.submit(archive, "flow-bench")
            assert len(driver.state.index) >= 3
            assert driver.wait_status("completed", "failed", "invalid", timeout=90) == "completed"

        # The cached empty board expires after ZR_LEADERBOARD_MAX_AGE (2 s): never stale longer.
        def published() -> bool:
            data = http.get(board).json()["data"]
            return any(entry.get("submission_id") == submission for entry in data)

        try:
            wait_for(published, timeout=2 + 10, what="the entry through the cache")
        except AssertionError:
            log = http.get(f"/submissions/{submission}/log", headers=driver.headers)
            raise AssertionError(f"{http.get(board).text}\n{log.text}") from None
        response = wait_for(
            lambda: (
                (r := http.get(board)).headers["x-cache-status"] in {"HIT", "REVALIDATED"} and r
            ),
            what="the new entry served from the cache",
        )
        etag = response.headers["etag"]
        assert http.get(board, headers={"If-None-Match": etag}).status_code == 304


def test_a_killed_gunicorn_worker_loses_no_request(appliance: Appliance) -> None:
    before = appliance.gunicorn_workers()
    victim = min(before)
    with Load(appliance.url) as load:
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                len(appliance.gunicorn_workers() - before) == 1
                and len(appliance.gunicorn_workers()) == 2
            ),
            what="gunicorn to replace the worker",
        )
        load.more()
    assert load.failures == [], load.failures[:5]
    assert victim not in appliance.gunicorn_workers()


def test_ctl_reload_under_load_drops_no_request_or_upload(
    appliance: Appliance, tmp_path: Path
) -> None:
    driver = participant(appliance, tmp_path, "reloader")
    before = appliance.gunicorn_workers()
    master = appliance.pid("api")
    with driver, Load(appliance.url) as load:
        thread, outcome = slow_part(driver, "test-challenge", tmp_path)
        assert "signalled" in appliance.cli("ctl", "reload")
        wait_for(
            lambda: (
                not (appliance.gunicorn_workers() & before)
                and len(appliance.gunicorn_workers()) == 2
            ),
            what="all workers replaced",
        )
        load.more()
        finish_upload(driver, thread, outcome)
    assert load.failures == [], load.failures[:5]
    assert appliance.pid("api") == master  # a reload, not a restart


def test_reload_applies_an_edited_env_file(appliance: Appliance) -> None:
    """The upgrade/backup procedure: ZR_READ_ONLY=true + `ctl reload`, writes get 423."""
    original = appliance.env_file.read_text()
    with appliance.client() as http:
        try:
            appliance.env_file.write_text(original + "ZR_READ_ONLY=true\n")
            appliance.cli("ctl", "reload")
            wait_for(lambda: http.post("/auth/logout").status_code == 423, what="read-only mode")
            assert http.get("/health").status_code == 200
        finally:
            appliance.env_file.write_text(original)
            appliance.cli("ctl", "reload")
        wait_for(lambda: http.post("/auth/logout").status_code == 401, what="writes again")


def test_a_killed_gunicorn_master_comes_back_and_finishes_its_upload(
    appliance: Appliance, tmp_path: Path
) -> None:
    driver = participant(appliance, tmp_path, "survivor")
    master = appliance.pid("api")
    old_workers = appliance.gunicorn_workers()
    with driver:
        thread, outcome = slow_part(driver, "test-challenge", tmp_path)
        os.kill(master, signal.SIGKILL)
        # The orphaned workers finish what they are doing (the upload), then exit; supervisord
        # starts a new master, which binds the port once they are gone.
        part_accepted(thread, outcome)
        wait_for(lambda: appliance.pid("api") not in (0, master), what="a new master")
        wait_until_responds(f"{appliance.url}/health", timeout=60)
        wait_for(lambda: len(appliance.gunicorn_workers()) == 2, what="new workers")
        # They died with their master (once their last requests were done), not orphans.
        wait_for(lambda: not any(alive(pid) for pid in old_workers), what="the old workers' end")
        assert "RUNNING" in appliance.cli("ctl", "status", "api")
        driver.upload()  # the rest of the parts, as `zrc submit --resume` would
        assert driver.wait_status("uploaded", "queued", "evaluating", "completed") != "uploading"


def test_a_killed_evaluation_worker_loses_no_job(appliance: Appliance, tmp_path: Path) -> None:
    app = appliance
    command = '/bin/sh -c \'sleep 4; cp "$0" "$1"\' {input}/scores/leaderboard.json {output}'
    app.cli("evaluators", "create", "slow", "--command", command)
    app.cli(
        "benchmarks", "create", "slow-bench", "--label", "Slow", "--url", "https://e.org",
        "--evaluator", "slow",
    )  # fmt: skip
    driver = participant(app, tmp_path, "patient")
    with driver:
        driver.submit(make_archive(tmp_path / "job.zip", payload_bytes=20_000), "slow-bench")
        driver.wait_status("evaluating", timeout=60)
        worker = app.pid("worker:worker-1")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: app.pid("worker:worker-1") not in (0, worker), what="a new worker")
        # The job's lease runs out (5 s), the new worker claims and finishes it.
        status = driver.wait_status("completed", "failed", "invalid", timeout=90)
        log = driver.http.get(
            f"/submissions/{driver.state.submission_id}/log", headers=driver.headers
        ).json()
        assert status == "completed", (log["log"], [e["message"] for e in log["events"]])
        attempts = [e["message"] for e in log["events"] if "claimed by worker" in e["message"]]
        assert len(attempts) == 2, attempts  # the killed attempt, then the one that finished


@pytest.mark.parametrize(
    ("page", "rendered"),
    [("docs", r'class="opblock opblock-'), ("redoc", r'data-section-id="operation/')],
)
def test_docs_render_in_chromium_with_the_network_cut_off(
    appliance: Appliance, tmp_path: Path, page: str, rendered: str
) -> None:
    chromium = require_binary("chromium")
    netlog = tmp_path / "net.json"
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
            # Outside the host nothing resolves, and any proxied request goes nowhere.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", f"--log-net-log={netlog}",
            "--virtual-time-budget=10000", "--dump-dom", f"{appliance.url}/{page}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    operations = len(re.findall(rendered, result.stdout))
    paths = httpx.get(f"{appliance.url}/openapi.json").json()["paths"]
    assert operations >= len(paths) > 10, f"{operations} operations rendered"
    # Every request of the page went to this server; the browser's own background services
    # (update checks, time) are not the page's and were not reachable anyway.
    browser_own = ("google.com/", "googleapis.com/", "gvt1.com/")
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text()))
    foreign = [
        u for u in urls
        if u.startswith("http") and not u.startswith(appliance.url)
        and not any(host in u for host in browser_own)
    ]  # fmt: skip
    assert foreign == []
    assert any(u.startswith(f"{appliance.url}/static/docs/") for u in urls)


def test_a_new_pyz_is_picked_up_by_ctl_restart(appliance: Appliance, tmp_path: Path) -> None:
    """Upgrade: replace the file atomically, `ctl restart api`: the new master runs the new build
    (its own extraction); the old build stays extracted for the processes still using it."""
    new_id = hashlib.sha256(b"the next release").hexdigest()
    staged = appliance.pyz.with_name(".staged.pyz")
    data = appliance.pyz.read_bytes()
    with zipfile.ZipFile(appliance.pyz) as source, open(staged, "wb") as handle:
        handle.write(data[: data.index(b"\n") + 1])  # the shebang
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                content = source.read(info)
                if info.filename == "environment.json":
                    environment = json.loads(content)
                    old_id, environment["build_id"] = environment["build_id"], new_id
                    content = json.dumps(environment).encode()
                target.writestr(info, content)
    os.replace(staged, appliance.pyz)
    master = appliance.pid("api")
    appliance.cli("ctl", "restart", "api")
    new_master = wait_for(lambda: appliance.pid("api") not in (0, master) and appliance.pid("api"))
    wait_until_responds(f"{appliance.url}/health", timeout=60)
    maps = Path(f"/proc/{new_master}/maps").read_text()
    assert f"_{new_id}/site-packages" in maps and f"_{old_id}/" not in maps
    assert f"(build {new_id[:12]})" in appliance.cli("version")


def test_backup_and_cleanup_from_the_pyz_while_it_runs(
    appliance: Appliance, tmp_path: Path
) -> None:
    out = appliance.cli("backup", str(tmp_path / "backups"))
    (folder,) = (tmp_path / "backups").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["database"]["copied"] and "integrity ok" in out
    assert any(f["path"].startswith("logs/") for f in manifest["files"])
    # The running build is kept, and so is an older one while a process still uses it.
    listing = appliance.cli("cleanup-extractions", "--dry-run")
    assert "kept (running build)" in listing and "would remove" not in listing
