"""The package itself: what importing it does to the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = "marker_plugin"
LOADS_SETTINGS = """
from zerospeech_api.settings import load_settings
load_settings(None)
"""


def test_pydantic_plugins_installed_on_the_host_are_never_loaded(tmp_path: Path) -> None:
    # A real distribution declaring a pydantic plugin, found through PYTHONPATH as any package
    # installed on the host would be; importing its module would leave a file behind.
    marker = tmp_path / "loaded"
    (tmp_path / f"{PLUGIN}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )
    info = tmp_path / f"{PLUGIN}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pydantic]\nmarker = {PLUGIN}:plugin\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZR_", "PYDANTIC_"))}
    env["PYTHONPATH"] = str(tmp_path)
    env["ZR_DATA_DIR"] = str(tmp_path / "data")

    # Without the package, pydantic loads it: the check below can fail.
    check = "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
    subprocess.run([sys.executable, "-c", check], env=env, check=True, cwd=tmp_path)
    assert marker.exists()
    marker.unlink()

    subprocess.run([sys.executable, "-c", LOADS_SETTINGS], env=env, check=True, cwd=tmp_path)
    assert not marker.exists()
