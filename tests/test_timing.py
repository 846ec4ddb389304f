"""nextscale.timing: contenders are timed in interleaved rounds after a warm-up, and the clock sees their cost."""

from __future__ import annotations

import time

from nextscale.timing import interleaved_times


def test_rounds_visit_every_function_in_turn_after_one_warm_up_each():
    calls = []
    named = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    synchronized = []
    rounds = []
    times = interleaved_times(
        named, 2, synchronize=lambda: synchronized.append(1), on_round=lambda i, t: rounds.append((i, len(t["a"])))
    )
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] * 2  # warm-up, then two rounds
    assert len(synchronized) == 2 * 3 * 2  # before and after every timed call
    assert rounds == [(0, 1), (1, 2)]
    assert {name: len(t) for name, t in times.items()} == {"a": 2, "b": 2, "c": 2}


def test_a_slower_function_measures_slower():
    times = interleaved_times({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.05)}, 3)
    assert min(times["slow"]) >= 0.05 > min(times["fast"])  # a sleep never returns early
