"""Which workers to keep, start, replace and retire (serve/fleet/plan.py): pure."""

from __future__ import annotations

import itertools

import pytest

from launchkit.serve.fleet.plan import StartWorker, plan_changes


def test_unchanged_fleet_keeps_every_worker():
    change = plan_changes([("a", 2)], {"a": [("a0", "k0"), ("a1", "k1")]}, ["k0", "k1"])
    assert change.keep == ("a0", "a1") and change.empty


def test_scale_up_moves_cores_make_before_break():
    # a had both cores; now a and a new worker get one each: a0 is replaced, not stopped first
    change = plan_changes([("a", 2)], {"a": [("a0", "both")]}, ["c0", "c1"])
    assert change.keep == ()
    assert change.start == (StartWorker("a", 0, "a0"), StartWorker("a", 1, None))
    assert change.retire == ()


def test_scale_down_retires_the_extra_workers_and_keeps_matching_ones():
    change = plan_changes([("a", 1)], {"a": [("a0", "c0"), ("a1", "c1")]}, ["c0"])
    assert change.keep == ("a0",) and change.retire == ("a1",) and change.start == ()


def test_models_take_instances_in_order_and_removed_models_retire():
    change = plan_changes([("a", 1), ("b", 2)], {"a": [("a0", "k0")], "gone": [("g0", "k9")]}, ["k0", "k1", "k2"])
    assert change.keep == ("a0",)
    assert [(s.model_key, s.instance) for s in change.start] == [("b", 1), ("b", 2)]
    assert change.retire == ("g0",)


def test_count_mismatch_is_a_bug_not_a_plan():
    with pytest.raises(ValueError):
        plan_changes([("a", 2)], {}, ["k0"])


@pytest.mark.parametrize("before,after", list(itertools.product(range(0, 4), repeat=2)))
def test_every_resize_ends_with_the_wanted_count(before, after):
    running = {"m": [(f"w{i}", f"old{i}") for i in range(before)]}
    change = plan_changes([("m", after)], running, [f"new{i}" for i in range(after)])
    replaced = {s.replaces for s in change.start if s.replaces}
    survivors = len(change.keep) + len(change.start)
    assert survivors == after
    # every old worker is kept, replaced (retired once its successor is ready) or retired now: none leaks
    assert set(change.keep) | replaced | set(change.retire) == {w for w, _ in running["m"]}
    assert not (replaced & set(change.retire))
