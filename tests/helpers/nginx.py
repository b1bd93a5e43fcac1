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


def render_nginx(
    folder: Path, *, nginx_port: int, api_port: int, extra: str = "", site: str | None = None
) -> Path:
    """Write folder/nginx.conf (including the site, plus `extra` in the http context); `site`
    replaces the shipped single-host site (e.g. `render_cluster_site`'s)."""
    if site is None:
        site = render_site(folder, nginx_port=nginx_port, api_port=api_port)
    (folder / "site.conf").write_text(site)
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


CLUSTER = ROOT / "etc" / "nginx" / "zerospeech-api-cluster.conf"
CLUSTER_UPSTREAMS = (
    "    server 192.0.2.11:8000 max_fails=3 fail_timeout=10s;\n"
    "    server 192.0.2.12:8000 max_fails=3 fail_timeout=10s;\n"
)


def render_cluster_site(folder: Path, *, nginx_port: int, api_ports: list[int]) -> str:
    """The shipped several-hosts example with one `server` line per port on loopback."""
    site = CLUSTER.read_text()
    servers = "".join(
        f"    server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n" for port in api_ports
    )
    for old, new in (
        (CLUSTER_UPSTREAMS, servers),
        ("listen 80;", f"listen 127.0.0.1:{nginx_port};"),
        ("    listen [::]:80;\n", ""),
        ("/var/cache/nginx/zerospeech-cluster", str(folder / "cache")),
    ):
        assert old in site, f"etc/nginx/zerospeech-api-cluster.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


def nginx_argv(nginx: str, config: Path) -> list[str]:
    return [nginx, "-p", str(config.parent), "-c", str(config), "-g", "daemon off;"]
