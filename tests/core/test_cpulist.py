"""The CPU-list notation: what users type, sysfs writes, and what the fuzzer found."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from launchkit.core.cpulist import MAX_ID, format_cpu_list, parse_cpu_list
from launchkit.core.errors import CpuListError


@pytest.mark.parametrize("text, cpus", [
    ("0-3,8-11", (0, 1, 2, 3, 8, 9, 10, 11)), ("0,2,4", (0, 2, 4)), ("0-7:2", (0, 2, 4, 6)),
    (" 5 , 1 ", (1, 5)), ("", ()),
])
def test_lists_as_sysfs_numactl_and_users_write_them(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text, message", [
    ("0-x", "not a number"), ("3-1", "runs backwards"), ("-1", "negative"), ("0-3:0", "at least 1"),
    # found by fuzz/run.py cpu_list: a range to a huge id was built in memory until the process died
    ("111111110-41111111047:1", "larger than any machine"), (f"0-{MAX_ID + 1}", "larger than any machine"),
])
def test_bad_lists_are_errors_that_say_why(text, message):
    with pytest.raises(CpuListError, match=message):
        parse_cpu_list(text)


@given(st.sets(st.integers(0, MAX_ID), max_size=64))
def test_formatting_reads_back(cpus):
    assert parse_cpu_list(format_cpu_list(cpus)) == tuple(sorted(cpus))
