"""``deepspark serve``: a model over REST (MLflow's scoring protocol) with adaptive batching.

One call for the common case, ``serve(ServeSettings(model_uri=...))``; ``create_app`` gives the
ASGI app for any ASGI server or for tests.
"""

from __future__ import annotations

from deepspark.serving.settings import ServeSettings, parse_size

__all__ = ["ServeSettings", "create_app", "parse_size", "serve"]


def __getattr__(name: str):
    # Starlette and the model stack load only when serving.
    if name == "create_app":
        from deepspark.serving.app import create_app

        return create_app
    if name == "serve":
        from deepspark.serving.server import serve

        return serve
    raise AttributeError(f"module 'deepspark.serving' has no attribute {name!r}")
