"""launchkit's runtime API: IPEX's ``ipex.cpu.runtime`` without IPEX.

    from launchkit.runtime import CPUPool, MultiStreamModule, Task, pin

The same public names and semantics as Intel Extension for PyTorch's runtime extension, so
migrating is a change of import, built on what PyTorch already offers: OpenMP thread counts are
per calling thread, and a thread's OpenMP team can be bound to the thread's cores. A pool is a
set of cores (:class:`CPUPool`); :class:`pin` runs the calling thread and its OpenMP team on a
pool; a :class:`Task` runs a callable on a pool in its own pinned thread and returns futures; a
:class:`MultiStreamModule` splits a batch over several such threads (streams), one copy of the
weights shared by all. Where IPEX was silent (bad stream counts, bad hints, cores outside the
process's mask, sockets taken for NUMA nodes), these raise with a message. Nothing happens at
import: the machine is read when a pool is made.
"""

from launchkit.runtime.multistream import MultiStreamModule, MultiStreamModuleHint, get_default_num_streams
from launchkit.runtime.pool import CPUPool, get_core_list_of_node_id
from launchkit.runtime.threads import Future, Task, pin

__all__ = ["CPUPool", "Future", "MultiStreamModule", "MultiStreamModuleHint", "Task", "get_core_list_of_node_id",
           "get_default_num_streams", "pin"]
