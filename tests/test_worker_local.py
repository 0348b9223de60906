"""LocalWorker: a real ``diffjscc worker`` process, up when start() returns, gone after stop()."""

from __future__ import annotations

import numpy as np
import pytest
from diffjscc.registry import get_model_spec
from diffjscc.worker.client import WorkerClient
from diffjscc.worker.local import LocalWorker
from diffjscc.worker.protocol import DecodeRequest, WorkerError

pytestmark = pytest.mark.timeout(120)


def test_local_worker_answers_when_started_and_is_gone_after_stop():
    n = get_model_spec("1/384").num_symbols(32, 48)
    with LocalWorker(["--engine", "synthetic"], name="t-local") as worker:
        assert worker.alive and worker.address.startswith("tcp://127.0.0.1:")
        with WorkerClient(worker.address, timeout_s=10, retries=0) as client:
            request = DecodeRequest(1, (32, 48), 1.0, np.ones(n, np.complex64))
            reply = client.decode(request)
        assert reply.ok and reply.served_by == "t-local"
        process = worker.process
    assert process.poll() is not None  # stopped on leaving the block


def test_a_worker_that_cannot_start_is_a_clear_error_with_its_output():
    worker = LocalWorker(["--engine", "no-such-engine"], ready_timeout_s=30)
    with pytest.raises(WorkerError, match="exited with status 2") as caught:
        worker.start()
    assert "no-such-engine" in str(caught.value)  # argparse's complaint, from the output tail
    assert not worker.alive
