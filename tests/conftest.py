"""Shared fixtures: one Ray instance for the whole test session; one torch thread for tests that train in-process."""
import os
import shutil
import tempfile

import pytest

_QUIET_RAY_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the old output engine honours verbose=0 (the new one prints a header)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no TensorBoard logger (it imports torch into the driver)
    "RAY_AUTH_MODE": "disabled",  # no ~/.ray/auth_token, no warning
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the working directory, so relative paths keep working
    # One math thread per Ray worker, whatever CPUs it requests (Ray would set OMP_NUM_THREADS to
    # them): on 2 shared cores, extra OpenMP threads only contend (an epoch measured 10x slower).
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture
def one_torch_thread():
    """One torch thread while the test runs, as the Ray workers use (``OMP_NUM_THREADS=1`` below):
    a test that trains in this process then sees the same numbers as a trial."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    """A local, quiet Ray with 2 CPUs for the whole session; session files in a temporary dir.

    Use it in any test that runs Ray Tune; give ``tune.RunConfig`` an absolute
    ``storage_path`` (e.g. from ``tmp_path``).
    """
    ray = pytest.importorskip("ray")
    saved = {k: os.environ.get(k) for k in [*_QUIET_RAY_ENV, "RAY_TMPDIR"]}
    # A short path under /tmp: Ray's socket paths must stay under the AF_UNIX limit (~107 bytes).
    temp_dir = tempfile.mkdtemp(prefix="ray_", dir="/tmp")
    os.environ.update(_QUIET_RAY_ENV, RAY_TMPDIR=temp_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING", _temp_dir=temp_dir)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
