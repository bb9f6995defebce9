import os
import signal

import mlflow
import pytest

from deepspark.tracking.run import deferred_interrupts, raise_if_interrupted, tracked_run


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


class _SignalsItselfWhenCollected:
    def __init__(self, signal_number):
        self.signal_number = signal_number

    def __del__(self):
        # The handler runs here; Python ignores the KeyboardInterrupt it raises in a finalizer.
        os.kill(os.getpid(), self.signal_number)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_swallowed_by_a_finalizer_still_ends_the_run_killed(workdir, signal_number):
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(experiment="swallowed") as active:
            _SignalsItselfWhenCollected(signal_number)  # collected at once
            raise_if_interrupted()  # what deepspark's InterruptCheck callback does each batch
    assert mlflow.get_run(active.info.run_id).info.status == "KILLED"
    raise_if_interrupted()  # nothing left over for the next run
