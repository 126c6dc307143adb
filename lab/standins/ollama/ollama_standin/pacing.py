"""Lab test fixture: making answers take about as long as a small model on a GPU.

The stand-in computes an answer in milliseconds, while a real query takes
seconds; lab tests that roll out releases under load must meet requests in
flight, so each unit of work (a generated token, a prompt token, an embedding
input) is given a duration (config.py's OLLAMA_STANDIN_*_SECONDS). A Pacer
keeps a schedule rather than sleeping a fixed time per unit: the n-th unit ends
no earlier than start + n * seconds, so the total is at least that long, work
the stand-in really does (a real all-minilm embedding) counts toward it, and
late wake-ups do not add up. It sleeps in the calling request's thread
(http.server's ThreadingHTTPServer) without holding any lock, so concurrent
requests overlap as they do on a server with OLLAMA_NUM_PARALLEL > 1.
"""

from __future__ import annotations

import time


class Pacer:
    """Sleeps so that the work stepped so far does not finish before its due time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.units = 0
        self._start = time.perf_counter()

    def step(self, units: int = 1) -> None:
        """Account for units more of work, sleeping until they are due (0 seconds: never sleeps)."""
        self.units += units
        if self.seconds <= 0:
            return
        due = self._start + self.units * self.seconds
        while (remaining := due - time.perf_counter()) > 0:
            time.sleep(remaining)
