"""``python -m deepspark.distributed._entry JOB_DIR``: one worker of a process launcher.

Runs the pickled job through ``run_packed`` with the collectives the launcher chose; rank 0 writes
the return value to the job folder, a worker that raises writes (exception, traceback) there and
exits 1.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def main(job_dir: Path) -> int:
    import cloudpickle

    from deepspark._atomic import write_bytes_atomic
    from deepspark.distributed._processes import ERROR_PREFIX, JOB_FILE, RESULT_FILE
    from deepspark.distributed.backends import COLLECTIVES_ENV, default_collectives
    from deepspark.distributed.cores import pin_this_process
    from deepspark.distributed.launch import run_packed

    rank = os.environ.get("RANK", os.environ.get("HOROVOD_RANK", "0"))
    # DEEPSPARK_BACKEND: what launchers of earlier versions set.
    collectives = (
        os.environ.get(COLLECTIVES_ENV)
        or os.environ.get("DEEPSPARK_BACKEND")
        or default_collectives()
    )
    if collectives != "jax":  # a JAX worker pins itself once JAX started (JaxDistributedBackend)
        pin_this_process()  # before torch sizes its thread pools
    try:
        result = run_packed((job_dir / JOB_FILE).read_bytes(), collectives)
    except Exception as error:  # noqa: BLE001  reported to the launcher, which re-raises it
        original = error.__cause__ or error
        write_bytes_atomic(
            job_dir / f"{ERROR_PREFIX}{rank}.pkl",
            _dumps_error(cloudpickle, original, traceback.format_exc()),
        )
        if collectives == "jax":
            # A normal exit would wait (minutes) in jax.distributed's shutdown barrier for
            # peers that are stuck in a collective with this process.
            sys.stderr.flush()
            os._exit(1)
        return 1
    if int(rank) == 0:
        write_bytes_atomic(job_dir / RESULT_FILE, cloudpickle.dumps(result))
    return 0


def _dumps_error(cloudpickle, error: BaseException, text: str) -> bytes:
    try:
        data = cloudpickle.dumps((error, text))
        cloudpickle.loads(data)
        return data
    except Exception:  # noqa: BLE001  an exception that does not survive pickling: keep its text
        return cloudpickle.dumps((f"{type(error).__name__}: {error}", text))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
