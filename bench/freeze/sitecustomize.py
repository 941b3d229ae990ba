"""Loaded by every proxy a bench starts (PYTHONPATH): SIGUSR2 moves the heap out of the collector's sight.

After start-up a LiteLLM proxy holds ~750k objects, and every full collection walks
them all: 0.2-0.4 s of CPU that lands in one round or another at random, the largest
noise in a comparison of two proxies. The bench sends SIGUSR2 to both after their
warm-up; ``gc.freeze()`` then keeps what start-up built out of later collections.
Both proxies are treated alike, and what each request allocates is still collected.
"""

import gc
import signal


def _freeze(signum: int, frame: object) -> None:
    gc.collect()
    gc.freeze()


signal.signal(signal.SIGUSR2, _freeze)
