"""``python scripts/uv_install.py PACKAGE...``: install into this interpreter's environment with
uv, from the sources pip is configured with.

uv resolves, fetches and unpacks in parallel (the project's install took 141 s instead of
pip's 224 s on 2 cores), but it reads none of pip's configuration. This script hands it what
``pip config list`` and the ``PIP_*`` variables name (index, extra indexes, find-links
folders, constraint files, certificate bundle), lets the best version win across all of them
as pip does (a local ``torch 2.13.0+cpu`` wheel over the index's CUDA build), and writes
bytecode as pip does. Keep that: where ``PYTHONDONTWRITEBYTECODE`` is set (this project's
machines set it), Python never caches what it compiles, so without the install's bytecode every
process compiles each module it imports (``make test``'s JAX phase took 954 s instead of 719 s,
while setup saved 27 s). Its exit status is uv's: ``make setup`` falls back to pip on failure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip option -> uv flag (each value of a space-separated list becomes one flag).
_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings() -> dict[str, list[str]]:
    """pip's effective settings for the options uv needs: config files, then ``PIP_*``."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        option = key.rpartition(".")[2]
        if option in _OPTIONS or option == "cert":
            settings[option] = shlex.split(value.strip().strip("'\""))
    for option in [*_OPTIONS, "cert"]:
        value = os.environ.get("PIP_" + option.upper().replace("-", "_"))
        if value:
            settings[option] = value.split()
    return settings


def main(packages: list[str]) -> int:
    uv = Path(sys.executable).with_name("uv")
    settings = pip_settings()
    command = [str(uv), "pip", "install", "--quiet", "--python", sys.executable]
    command += ["--compile-bytecode", "--index-strategy", "unsafe-best-match"]
    for option, flag in _OPTIONS.items():
        for value in settings.get(option, []):
            if option == "find-links" and "://" not in value and not Path(value).exists():
                continue  # pip skips a missing folder; uv would stop
            command += [flag, value]
    env = dict(os.environ)
    if settings.get("cert"):
        env.setdefault("SSL_CERT_FILE", settings["cert"][0])
    return subprocess.run([*command, *packages], env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
