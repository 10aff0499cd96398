"""Small helpers shared by the conformance tests."""

from __future__ import annotations


def run_briefly(loop):
    """Run exactly one iteration of the loop (stop() before run_forever(), as both loops define)."""
    loop.stop()
    loop.run_forever()
