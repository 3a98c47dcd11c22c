"""Shared test settings.

One thread per process: the tests use tiny tensors, where a second thread gains little, and on a shared or busy
two-core machine OpenMP threads that spin-wait for each other slow everything down several times. Set before
torch is imported, OMP_NUM_THREADS also reaches the `ddpm` processes that tests start.
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# The CLI caches decoded image folders (and FID statistics) in $DDPMKIT_CACHE: keep the tests' out of ~/.cache.
os.environ.setdefault("DDPMKIT_CACHE", tempfile.mkdtemp(prefix="ddpmkit-test-cache-"))

import torch  # noqa: E402

torch.set_num_threads(1)
