"""A worker that raises fails the job at once with its own exception (no restart, no hang)."""

import pytest

from deepspark.distributed import run
from tests.distributed.rank_functions import fail_on_rank_one

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_worker_exception_is_raised_not_retried(workdir, caplog):
    with pytest.raises(ValueError, match="rank 1 cannot go on"):
        run(fail_on_rank_one, workers=2, launcher="local", max_restarts=2)
    assert "restart" not in caplog.text
