import os
import signal

import mlflow
import pytest

from deepspark.tracking.run import deferred_interrupts, tracked_run


def test_signal_inside_a_write_waits_until_it_is_done(workdir):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(experiment="signals") as active:
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                mlflow.log_metric("written", 1.0)
                done.append("write finished")
            done.append("never reached")
    assert done == ["write finished"]
    run = mlflow.get_run(active.info.run_id)
    assert run.info.status == "KILLED" and run.data.metrics["written"] == 1.0


def test_failure_marks_the_run_failed(workdir):
    with pytest.raises(RuntimeError, match="boom"):
        with tracked_run(experiment="failures") as active:
            raise RuntimeError("boom")
    assert mlflow.get_run(active.info.run_id).info.status == "FAILED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
