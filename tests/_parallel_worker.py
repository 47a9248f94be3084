"""Subprocess side of tests/test_parallel.py: the device count is fixed when JAX starts.

    JAX_NUM_CPU_DEVICES=4 python tests/_parallel_worker.py devices
        trains on 1 device and on meshes of 2 and 4; prints one JSON line.
    JAX_NUM_CPU_DEVICES=2 python tests/_parallel_worker.py multi PORT PROCESS_ID NUM_PROCESSES OUT.npz
        one process of a multi-process run on 127.0.0.1:PORT; each process
        loads only its rows of the training set; process 0 saves the params.

Importing this module starts nothing (the test imports ``toy_data``).
"""
import json
import sys

import numpy as np

N, D, CLASSES, BATCH, EPOCHS = 100, 6, 3, 16, 4  # 6 full batches of 16 and a partial batch of 4
SIZES = (D, 16, CLASSES)


def toy_data(n=N):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, D)), rng.integers(0, CLASSES, n).astype(np.int32)


def _setup():
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    return jax


def _fit(x, y, mesh=None, n_batch=BATCH, dropout=0.2, grad="manual"):
    import jax
    import jax.numpy as jnp

    import funcnn
    from funcnn import optim, train
    net = funcnn.mlp(list(SIZES), hidden="tanh", dropout=dropout)
    return train.fit(net, optim.adam(1e-2), (x, y), epochs=EPOCHS, batch_size=n_batch,
                     key=jax.random.key(0), dtype=jnp.float64, grad=grad, mesh=mesh)


def _err(a, b):
    import jax
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def devices():
    jax = _setup()
    import jax.numpy as jnp

    import funcnn
    from funcnn import optim, parallel, train
    out = {"device_count": jax.device_count()}
    mesh4, mesh2 = parallel.data_mesh(), parallel.data_mesh(jax.devices()[:2])
    # n=100: a last batch of 4 (split over the devices); n=103: of 7 (not a multiple of 4 or 2: unsplit).
    for n, grad, mesh in ((100, "manual", mesh4), (103, "autodiff", mesh4), (103, "manual", mesh2)):
        x, y = toy_data(n)
        ref, h1 = _fit(x, y, grad=grad)
        st, h = _fit(x, y, mesh, grad=grad)
        name = f"n{n}_{grad}_{mesh.size}dev"
        out[f"params_err_{name}"] = _err(ref.params, st.params)
        out[f"loss_err_{name}"] = float(np.max(np.abs(np.subtract(h1.train_loss, h.train_loss))))
    out["state_spec"] = str(st.params[0]["W"].sharding.spec)
    out["state_devices"] = len(st.params[0]["W"].sharding.device_set)

    x, y = toy_data()
    xs = parallel.shard_batch(mesh4, x)
    out["shard_spec"] = str(xs.sharding.spec)
    out["shard_shapes"] = [list(s.data.shape) for s in xs.addressable_shards]

    net = funcnn.mlp(list(SIZES), hidden="tanh")
    opt = optim.sgd(0.1)
    state = parallel.replicate(mesh4, train.init_state(net, opt, key=jax.random.key(0), dtype=jnp.float64))
    xr, yr = parallel.replicate(mesh4, (jnp.asarray(x), jnp.asarray(y)))
    hlo = train.make_epoch(net, opt, batch_size=BATCH, mesh=mesh4).lower(state, xr, yr).compile().as_text()
    ar = [l for l in hlo.splitlines() if " all-reduce(" in l]
    out["all_reduce_lines"] = len(ar)
    out["all_reduce_has_grads"] = bool(ar) and all(f"f64[{a},{b}]" in ar[0]
                                                   for a, b in zip(SIZES[:-1], SIZES[1:]))
    out["per_device_batch"] = f"f64[{BATCH // 4},{D}]" in hlo and f"f64[{BATCH},{D}]" not in hlo

    try:
        _fit(x, y, mesh4, n_batch=10)
        out["bad_batch_error"] = None
    except ValueError as e:
        out["bad_batch_error"] = str(e)
    try:  # make_epoch checks too, before tracing anything
        train.make_epoch(net, opt, batch_size=10, mesh=mesh4)
        out["bad_batch_error_make_epoch"] = None
    except ValueError as e:
        out["bad_batch_error_make_epoch"] = str(e)
    print(json.dumps(out))


def multi(port, process_id, num_processes, path):
    jax = _setup()
    from funcnn import parallel
    parallel.initialize_distributed(f"127.0.0.1:{port}", int(num_processes), int(process_id))
    mesh = parallel.data_mesh()
    x, y = toy_data()
    rows = parallel.process_rows(mesh, N)
    # Each process holds only its rows; the global arrays are split across processes.
    xg, yg = parallel.shard_rows(mesh, x[rows], N), parallel.shard_rows(mesh, y[rows], N)
    state, history = _fit(xg, yg, mesh)
    if parallel.is_main_process():
        params = {f"{l}/{k}": np.asarray(v) for l, layer in enumerate(state.params) for k, v in layer.items()}
        np.savez(path, **params, train_loss=np.asarray(history.train_loss),
                 info=np.asarray([jax.process_count(), jax.device_count(), len(jax.local_devices()),
                                  rows.stop - rows.start]))
    jax.distributed.shutdown()


if __name__ == "__main__":
    {"devices": devices, "multi": multi}[sys.argv[1]](*sys.argv[2:])
