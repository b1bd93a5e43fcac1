"""etc/gunicorn.conf.py under real gunicorn (`serve -c`): it reads the ZR_ settings, so the
operator's values win over it instead of being overridden by repeated defaults."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.processes import wait_for
from tests.helpers.server import Server

pytestmark = pytest.mark.e2e

CONF = Path(__file__).resolve().parents[2] / "etc" / "gunicorn.conf.py"


def test_the_shipped_gunicorn_conf_honours_the_zr_settings(
    make_server: Callable[..., Server],
) -> None:
    # Only nginx at 10.9.9.9 may say who the client is: this test's own X-Forwarded-For (from
    # 127.0.0.1) must be ignored. The old file set forwarded_allow_ips = "127.0.0.1" over it.
    server = make_server(
        workers=1,
        env={"ZR_FORWARDED_ALLOW_IPS": "10.9.9.9"},
        extra_args=("-c", str(CONF)),
    )
    with server.client() as client:
        response = client.get(
            "/", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "conf-probe"}
        )
        assert response.status_code == 200

    def access_line() -> str | None:
        lines = server.output().splitlines()
        return next((x for x in lines if "rid=conf-probe" in x and "GET / " in x), None)

    line = wait_for(access_line, timeout=20, what="the access log line")
    assert re.search(r"\b127\.0\.0\.1:\d+ - \"GET / ", line), line
    assert "203.0.113.7" not in server.output()

    # A bad edit of the .env, then `ctl reload` (HUP): the file must not end the master (gunicorn
    # exits on an error in a config file); serve keeps its previous settings and serves on.
    with server.env_file.open("a") as env:
        env.write("ZR_WORKERS=lots\n")
    booted = server.output().count("Booting worker")
    server.process.signal(signal.SIGHUP)
    wait_for(lambda: "reload: keeping the previous settings" in server.output(), timeout=30)
    wait_for(lambda: server.output().count("Booting worker") > booted, timeout=30)
    assert server.process.alive(), server.output()[-4000:]
    with server.client() as client:
        assert client.get("/health").status_code == 200
