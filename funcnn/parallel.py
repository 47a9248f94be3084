"""Data parallelism over devices and hosts with ``jax.sharding``.

The contract, stated once: a ``Mesh`` with one axis named ``"data"`` spans
every device (of every process); parameters and optimizer state are
replicated on it; each step's minibatch ``[B, d]`` is split along the data
axis, ``B / devices`` rows per device. Nothing here writes a collective by
hand: with those shardings set, XLA's SPMD partitioner turns the gradient's
sum over the batch into per-device partial sums plus ONE all-reduce per step
(its size is the parameter bytes), and every device applies the same update.

    mesh = parallel.data_mesh()                       # all devices, axis "data"
    state, history = train.fit(net, opt, (x, y), epochs=..., batch_size=128,
                               key=key, mesh=mesh)    # batch_size % devices == 0

Training with a mesh of N devices gives the parameters of training on one
device with the same global batch, up to float rounding: the batch sum is
added in a different order (measured in tests/test_parallel.py, 4 epochs:
max |difference| ~2e-16 in float64 and ~6e-8 in float32). Dropout masks are
the same too (``jax_threefry_partitionable``, on by default, makes random
bits independent of the sharding).

Multi-host (one process per host, or per GPU): call ``initialize_distributed``
first, before any other JAX call; ``jax.devices()`` then lists every process's
devices, ``data_mesh()`` spans them all, and ``fit(..., mesh=mesh)`` is run by
every process with the same arguments (same config, same key). Each process
may load only its own rows and build the global array with ``shard_rows``;
``fit`` all-gathers the training set once so every device holds it and the
epoch shuffle is exactly the single-process one (the data sets funcnn trains
on are small next to device memory; the per-step traffic is only gradients).
Write files from process 0 only (``is_main_process()``).
"""
from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from funcnn.errors import InvalidArgument

DATA_AXIS = "data"

__all__ = ["DATA_AXIS", "batch_sharding", "check_batch_size", "data_mesh", "initialize_distributed",
           "is_main_process", "num_data_devices", "process_rows", "replicate", "replicated_sharding",
           "shard_batch", "shard_rows"]


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Joins this process to a multi-process JAX cluster (``jax.distributed.initialize``).

    Must run before any other JAX computation in the process. Each argument
    left None is taken from the environment: ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0, which serves the coordinator there),
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``. Whatever is still None is then
    auto-detected by ``jax.distributed`` itself on SLURM (``srun``: from
    ``SLURM_*``; the coordinator is the job's first node), Open MPI
    (``mpirun``) and Cloud TPU. On CPU the cross-process collectives are
    gloo's (``jax_cpu_collectives_implementation``, "gloo" by default).

    Args:
      coordinator_address: ``"host:port"`` reachable from every process.
      num_processes: number of processes in the job (>= 1).
      process_id: this process's index, ``0 <= process_id < num_processes``.

    Returns:
      True if ``jax.distributed.initialize`` was called; False when
      ``num_processes`` is 1 (one process: data parallelism over its local
      devices needs no cluster).

    Raises:
      ValueError: a malformed environment variable, or what
        ``jax.distributed.initialize`` raises when it cannot resolve the
        arguments (no coordinator, process count or id, and no cluster found).
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
    process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
    if num_processes == 1:
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"environment variable {name}={raw!r} must be an integer.") from None


def is_main_process() -> bool:
    """True in process 0, the one that prints and writes files."""
    return jax.process_index() == 0


def data_mesh(devices=None) -> Mesh:
    """A 1-D ``Mesh`` named ``"data"`` over ``devices`` (default: all devices of all processes).

    The axis type is ``Auto``: shardings are hints that XLA's partitioner
    propagates (``jax.make_mesh`` would default to ``Explicit``).

    Args:
      devices: a sequence of ``jax.Device`` (default ``jax.devices()``).

    Returns:
      ``Mesh`` of shape ``{"data": len(devices)}``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise InvalidArgument("data_mesh needs at least one device; got an empty list.")
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def _check_mesh(mesh) -> None:
    if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
        raise InvalidArgument(f"mesh must be a jax.sharding.Mesh with an axis named {DATA_AXIS!r} "
                         f"(see funcnn.parallel.data_mesh); got {mesh!r}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split along the ``"data"`` axis; other axes whole."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P())


def num_data_devices(mesh: Mesh) -> int:
    """Devices along the ``"data"`` axis (the number of batch shards)."""
    _check_mesh(mesh)
    return mesh.shape[DATA_AXIS]


def check_batch_size(mesh: Mesh, batch_size: int, *, name: str = "batch_size") -> int:
    """Checks that ``batch_size`` splits evenly over the mesh's data axis.

    Raises:
      ValueError: ``batch_size`` is not a multiple of the device count.
    """
    d = num_data_devices(mesh)
    if batch_size % d:
        near = sorted({max(d, batch_size // d * d), (batch_size // d + 1) * d})
        raise InvalidArgument(
            f"{name}={batch_size} is not divisible by the {d} devices of the mesh: data parallelism "
            f"gives each device {name}/{d} samples per step. Use a multiple of {d}, e.g. "
            f"{' or '.join(map(str, near))} (or a mesh over fewer devices).")
    return batch_size


def shard_batch(mesh: Mesh, x) -> jax.Array:
    """Places ``x [n, ...]`` on the mesh with its rows split along ``"data"``.

    Every process passes the same full ``x`` (for per-process rows use
    ``shard_rows``).

    Raises:
      ValueError: ``n`` is not a multiple of the device count.
    """
    n = np.shape(x)[0] if np.ndim(x) else None
    d = num_data_devices(mesh)
    if n is None or n % d:
        raise InvalidArgument(f"shard_batch needs an array [n, ...] with n divisible by the {d} devices "
                         f"of the mesh; got shape {np.shape(x)}.")
    return jax.device_put(x, batch_sharding(mesh))


def process_rows(mesh: Mesh, n: int) -> slice:
    """The rows of a global ``[n, ...]`` array, sharded by ``shard_rows``, that this process holds.

    Raises:
      ValueError: ``n`` is not a multiple of the device count, or this
        process's devices are not contiguous on the mesh.
    """
    d = num_data_devices(mesh)
    if n % d:
        raise InvalidArgument(f"{n} rows do not split evenly over the {d} devices of the mesh; drop "
                         f"{n % d} rows or load the whole array in every process instead.")
    index = batch_sharding(mesh).addressable_devices_indices_map((n,)).values()
    starts = sorted(i[0].indices(n)[:2] for i in index if i is not None)  # None: a device holding nothing
    for (_, stop), (start, _) in zip(starts, starts[1:]):
        if stop != start:
            raise InvalidArgument("this process's devices are not contiguous on the mesh; build it with "
                             "data_mesh() (devices ordered by process).")
    return slice(starts[0][0], starts[-1][1])


def shard_rows(mesh: Mesh, local, n: int) -> jax.Array:
    """The global ``[n, ...]`` array from the rows each process holds (``process_rows(mesh, n)``).

    Every process calls it with its own rows; the result's rows are split
    along ``"data"`` (``jax.make_array_from_process_local_data``).

    Args:
      mesh: from ``data_mesh``.
      local: this process's rows, ``[rows, ...]`` with ``rows`` the length of
        ``process_rows(mesh, n)``.
      n: the global number of rows.
    """
    rows = process_rows(mesh, n)
    if np.shape(local)[0] != rows.stop - rows.start:
        raise InvalidArgument(f"process {jax.process_index()} must pass rows {rows.start}:{rows.stop} "
                         f"({rows.stop - rows.start} rows) of the {n}; got {np.shape(local)[0]}.")
    return jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(local),
                                                  (n,) + tuple(np.shape(local)[1:]))


def replicate(mesh: Mesh, tree):
    """Every array leaf of ``tree`` copied whole onto every device of the mesh.

    Host arrays and single-device arrays must hold the same value in every
    process. A global array sharded across processes (``shard_rows``) is
    all-gathered (one collective). ``jax.random`` key leaves are supported.
    """
    sharding = replicated_sharding(mesh)

    def put(a):
        if isinstance(a, jax.Array) and a.sharding == sharding:
            return a
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return _gather(sharding)(a)
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            # device_put refuses key arrays for shardings over other processes' devices.
            data = jax.device_put(jax.random.key_data(a), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jax.device_put(a, sharding)

    return jax.tree.map(put, tree)


@functools.lru_cache(maxsize=8)
def _gather(sharding):
    return jax.jit(lambda a: a, out_shardings=sharding)  # XLA inserts the all-gather
