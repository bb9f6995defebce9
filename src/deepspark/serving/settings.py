"""``ServeSettings``: how ``deepspark serve`` runs, validated in one place.

The settings travel to ``--workers`` processes as JSON in one environment variable, because
uvicorn starts each worker from an import string (``create_app_from_environment``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from deepspark.errors import UserInputError

#: The environment variable a worker process reads its settings from.
SETTINGS_VARIABLE = "DEEPSPARK_SERVE_SETTINGS"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{16,}$")
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9}


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Options of ``deepspark serve`` (see ``deepspark serve --help``).

    Attributes:
        model_uri: Model to serve (``models:/...``, ``runs:/...`` or a folder).
        host: Interface to listen on.
        port: TCP port.
        workers: Server processes, each with its own copy of the model.
        max_batch_rows: Most rows the batcher puts into one model call.
        max_wait_ms: Longest a request waits for others to join its batch.
        max_queue: Most requests waiting for the model; more get 503.
        max_request_bytes: Largest request body; larger ones get 413.
        timeout_s: Longest a request waits for its predictions; then 504.
        allow_paths: Folders (or URI prefixes, ``s3://bucket/photos``) whose files a ``path``
            column may name; none: paths are refused.
        token: The bearer token every request but ``/ping`` and ``/health`` must carry.
        no_token: Listen on a non-loopback interface without a token (a reverse proxy in front
            authenticates).
        model_dir: The local folder the model was resolved to (set by ``serve``, so that
            ``--workers`` processes do not download it again).
    """

    model_uri: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    max_batch_rows: int = 1024
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_request_bytes: int = 10 * 10**6
    timeout_s: float = 30.0
    allow_paths: tuple[str, ...] = ()
    token: str | None = None
    no_token: bool = False
    model_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_paths", tuple(str(p) for p in self.allow_paths or ()))
        for folder in self.allow_paths:
            if "://" not in folder and not os.path.isdir(folder):
                raise UserInputError(
                    f"--allow-paths takes folders (or URI prefixes such as s3://bucket/photos); "
                    f"this one is not a folder. Received: allow_paths={folder!r}"
                )
        positive = {
            "workers": self.workers,
            "max_batch_rows": self.max_batch_rows,
            "max_queue": self.max_queue,
            "max_request_bytes": self.max_request_bytes,
            "timeout_s": self.timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                _invalid(name, value, "a positive number")
        if self.max_wait_ms < 0:
            _invalid("max_wait_ms", self.max_wait_ms, "0 or more milliseconds")
        if not 0 <= self.port <= 65535:
            _invalid("port", self.port, "a TCP port (0-65535)")
        self._check_access()

    def _check_access(self) -> None:
        from deepspark.serving.auth import is_loopback

        if self.token is not None and not _TOKEN.match(self.token):
            raise UserInputError(
                "--token must be 16 or more URL-safe characters (letters, digits, - _ . ~), e.g. "
                "from `python -c 'import secrets; print(secrets.token_urlsafe())'`. "
                f"Received: a token of {len(self.token)} characters"
            )
        if self.token is None and not self.no_token and not is_loopback(self.host):
            raise UserInputError(
                f"--host {self.host} lets other machines call the model: give a token "
                "(--token or $DEEPSPARK_SERVE_TOKEN), or --no-token when a reverse proxy in "
                f"front authenticates. Received: host={self.host!r}"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_environment(cls) -> ServeSettings:
        """The settings a ``--workers`` process was started with."""
        text = os.environ.get(SETTINGS_VARIABLE)
        if not text:
            raise UserInputError(
                f"No serving settings in the environment; start workers with `deepspark serve`. "
                f"Received: {SETTINGS_VARIABLE}={text!r}"
            )
        return cls(**json.loads(text))


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: ``10MB``, ``512KB``, ``1.5MiB`` or a plain number of bytes.

    Raises:
        UserInputError: Not a size.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise UserInputError(
            f"A size must be a number of bytes with an optional unit (KB, MB, GB, KiB, MiB), "
            f"e.g. 10MB. Received: max_request_bytes={text!r}"
        )
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    factor = _UNITS[unit[:1]]
    if "i" in unit:
        factor = {10**3: 2**10, 10**6: 2**20, 10**9: 2**30}[factor]
    return int(number * factor)


def _invalid(name: str, value, expected: str) -> None:
    option = "--" + name.replace("_", "-")
    raise UserInputError(f"{option} must be {expected}. Received: {name}={value!r}")
