"""Launching pinned, tuned processes (`launchkit run`, and the server's workers).

Pure planning: ``cpu_options`` (what a user asks of the CPU plan), ``plan`` (which CPUs and memory
nodes each instance gets), ``env`` (its
environment), ``runplan`` (the whole launch as data), ``flags`` (the launcher's flags as data →
a request). Effects: ``libraries`` (finding tcmalloc/jemalloc/libiomp5, probing numactl),
``request`` (reads the live machine and builds the plan), ``spawn`` (starting and stopping one
child the one way), ``supervise`` (running a plan: signals, logs, exit status), ``machine``
(`launchkit info`'s report). No torch.
"""
