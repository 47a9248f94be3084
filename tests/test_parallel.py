"""Data parallelism: N devices and 2 processes give the 1-device parameters.

The device count is fixed when JAX starts, so every multi-device run happens
in a subprocess (``tests/_parallel_worker.py`` or ``python -m funcnn``) with
``JAX_NUM_CPU_DEVICES`` set; this process keeps its one device. Multi-process
runs talk over 127.0.0.1 with JAX's CPU collectives (gloo).

Tolerances: float64 runs agree to 1e-10 (measured ~2e-16: only the order of
the batch sum differs); float32 runs of the CLI to 1e-5 (measured ~6e-8).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _parallel_worker import BATCH, EPOCHS, SIZES, N, toy_data

from funcnn import checkpoint, cli, parallel

HERE = Path(__file__).parent
WORKER = str(HERE / "_parallel_worker.py")
CONFIGS = HERE.parent / "configs"
TIMEOUT = 120


def _env(devices):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu",
               JAX_ENABLE_X64="1")  # as conftest does here: float32 runs then match this process
    env.pop("XLA_FLAGS", None)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(commands, devices):
    """Starts every command at once; returns their (returncode, stdout, stderr)."""
    procs = [subprocess.Popen(c, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rc, _, err in results:
        low = err.lower()
        if rc and "gloo" in low and any(s in low for s in ("not available", "unimplemented", "not supported",
                                                           "no attribute")):
            pytest.skip(f"gloo CPU collectives are not available in this jaxlib: {err.strip()[-300:]}")
    for rc, out, err in results:
        assert rc == 0, f"subprocess failed ({rc}):\n{out[-2000:]}\n{err[-4000:]}"
    return results


def test_mesh_of_4_and_2_devices_trains_the_1_device_parameters():
    (_, out, _), = _run_processes([[sys.executable, WORKER, "devices"]], devices=4)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["device_count"] == 4
    errs = {k: v for k, v in r.items() if k.startswith(("params_err", "loss_err"))}
    assert len(errs) == 6 and all(v <= 1e-10 for v in errs.values()), errs
    # The data really is split: 4 shards of 25 rows; each step's dot works on B/4 rows,
    # and the gradients are summed by one all-reduce per step (plus one for the last batch).
    assert r["shard_spec"] == "P('data',)" and r["shard_shapes"] == [[25, 6]] * 4
    assert r["per_device_batch"] and r["all_reduce_has_grads"] and r["all_reduce_lines"] == 2
    assert r["state_spec"] == "P()" and r["state_devices"] == 2  # replicated on the 2-device mesh
    for key in ("bad_batch_error", "bad_batch_error_make_epoch"):
        assert r[key] is not None and "batch_size=10" in r[key] and "4 devices" in r[key], key


def _reference_params():
    import funcnn
    from funcnn import optim, train
    x, y = toy_data()
    net = funcnn.mlp(list(SIZES), hidden="tanh", dropout=0.2)
    state, history = train.fit(net, optim.adam(1e-2), (x, y), epochs=EPOCHS, batch_size=BATCH,
                               key=jax.random.key(0), dtype=jnp.float64)
    return state.params, history


def test_two_processes_with_their_own_rows_train_the_single_process_parameters(tmp_path):
    port, path = _free_port(), tmp_path / "params.npz"
    _run_processes([[sys.executable, WORKER, "multi", str(port), str(i), "2", str(path)] for i in range(2)],
                   devices=2)
    got = np.load(path)
    assert list(got["info"]) == [2, 4, 2, N // 2]  # processes, global devices, local devices, rows held
    params, history = _reference_params()
    for l, layer in enumerate(params):
        for k, v in layer.items():
            np.testing.assert_allclose(got[f"{l}/{k}"], np.asarray(v), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["train_loss"], history.train_loss, rtol=1e-10)


def _cli_args(out):
    return ["train", str(CONFIGS / "two_lines.toml"), "--out", str(out), "--quiet", "--set", "training.epochs=3",
            "--set", "output.plots=false", "--set", "output.gradcheck=false"]


def test_cli_distributed_over_two_processes_matches_a_single_process_run(tmp_path, capsys):
    port = _free_port()
    cmds = [[sys.executable, "-m", "funcnn"] + _cli_args(tmp_path / "dist")
            + ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
               "--process-id", str(i)] for i in range(2)]
    (_, out0, _), (_, out1, _) = _run_processes(cmds, devices=2)
    # Process 0 prints; the other prints nothing but gloo's own "[Gloo] Rank r is connected to
    # k peer ranks ..." lines, which its C++ logger can split or interleave mid-line (leaving a
    # blank line: seen once when the suite's compilation cache made the processes start faster).
    out1 = [l for l in out1.splitlines() if l.strip() and "[Gloo]" not in l and "peer ranks" not in l]
    assert "test accuracy" in out0 and out1 == []
    assert cli.main(_cli_args(tmp_path / "single")) == 0
    assert cli.main(_cli_args(tmp_path / "one") + ["--distributed", "--num-processes", "1"]) == 0
    ref = checkpoint.load(tmp_path / "single" / "final.ckpt")
    assert not (tmp_path / "dist" / "gradcheck.txt").exists()
    for run in ("dist", "one"):
        ck = checkpoint.load(tmp_path / run / "final.ckpt")
        assert int(ck.step) == int(ref.step)
        for a, b in zip(ck.params, ref.params):
            for k in ("W", "b"):
                np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=0, atol=1e-5)
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(l)["epoch"] for l in lines] == [0, 1, 2]  # written once, by process 0


def test_cli_rejects_cluster_flags_without_distributed(tmp_path, capsys):
    assert cli.main(_cli_args(tmp_path / "run") + ["--num-processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "--num-processes only apply with --distributed" in err and not (tmp_path / "run").exists()


def test_initialize_distributed_reads_the_environment(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert parallel.initialize_distributed() is False  # one process: nothing to join
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' must be an integer"):
        parallel.initialize_distributed()


def test_one_device_mesh_and_bad_meshes():
    assert parallel.data_mesh().size == jax.device_count()
    mesh = parallel.data_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",) and parallel.check_batch_size(mesh, 7) == 7
    with pytest.raises(ValueError, match="axis named 'data'"):
        parallel.batch_sharding(jax.make_mesh((1,), ("batch",), devices=jax.devices()[:1]))
    with pytest.raises(ValueError, match="at least one device"):
        parallel.data_mesh([])
