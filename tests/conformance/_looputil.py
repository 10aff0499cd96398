"""Small helpers shared by the conformance tests."""

from __future__ import annotations


def run_briefly(loop):
    """Run exactly one iteration of the loop (stop() before run_forever(), as both loops define)."""
    loop.stop()
    loop.run_forever()


def shifted_clock_loop(loop_type):
    """A new loop of a subclass of ``loop_type`` whose ``time()`` runs ``shift`` seconds ahead
    of the loop's own clock (0 until the test moves it)."""

    class Shifted(loop_type):
        shift = 0.0

        def time(self):
            return super().time() + self.shift

    return Shifted()
