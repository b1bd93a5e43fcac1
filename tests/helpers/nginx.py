"""The shipped etc/nginx/zerospeech-api.conf, made runnable as a foreground nginx on loopback:
ports and the cache folder substituted, wrapped in a main config whose paths are all in a
folder of ours (`nginx -p FOLDER -c nginx.conf -g 'daemon off;'`), no root-owned paths."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "etc" / "nginx" / "zerospeech-api.conf"


def render_site(folder: Path, *, nginx_port: int, api_port: int) -> str:
    """The shipped site config for these ports; fails if the file changed shape."""
    site = SHIPPED.read_text()
    for old, new in (
        ("127.0.0.1:8000", f"127.0.0.1:{api_port}"),
        ("listen 80;", f"listen 127.0.0.1:{nginx_port};"),
        ("    listen [::]:80;\n", ""),
        ("/var/cache/nginx/zerospeech", str(folder / "cache")),
    ):
        assert old in site, f"etc/nginx/zerospeech-api.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


def render_nginx(folder: Path, *, nginx_port: int, api_port: int, extra: str = "") -> Path:
    """Write folder/nginx.conf (including the site, plus `extra` in the http context)."""
    (folder / "site.conf").write_text(render_site(folder, nginx_port=nginx_port, api_port=api_port))
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers run as nobody
    main = (
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n"
        f"    include {folder / 'site.conf'};\n{extra}\n}}\n"
    )
    (folder / "nginx.conf").write_text(main)
    return folder / "nginx.conf"


def nginx_argv(nginx: str, config: Path) -> list[str]:
    return [nginx, "-p", str(config.parent), "-c", str(config), "-g", "daemon off;"]
