"""Re-measures issue 11's audit: bad inputs at the command line, and SIGKILLs during training.

For every bad input the real ``funcnn`` command is run in a subprocess and the
outcome classified: a clear error (non-zero exit, one ``funcnn: error:`` line),
a traceback, or silently accepted (exit 0 where an error was due). Then a small
digits run with a validation split and early stopping is SIGKILLed at random
moments and resumed until it finishes; each result is compared with the
uninterrupted run (``best.ckpt``, ``final.ckpt`` arrays and ``metrics.jsonl``,
bit for bit).

    python scripts/safety_audit.py --out /tmp/audit --kills 12
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMALL = ["model.sizes=[64,16,10]", "data.augment=false", "output.plots=false", "output.gradcheck=false",
         "optimizer.learning_rate=0.05", "training.batch_size=128", "data.val_size=0.15",
         "training.epochs=30", "training.early_stopping=2"]


def funcnn(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "funcnn", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def sets(items):
    return [a for s in items for a in ("--set", s)]


def classify(proc, expect):
    err = proc.stderr.strip()
    if "Traceback" in err:
        return "traceback"
    if expect == "noop":
        return "clear" if proc.returncode == 0 else "traceback"
    if proc.returncode == 0:
        return "silently accepted"
    return "clear" if err.startswith("funcnn: error:") and len(err.splitlines()) == 1 else "vague"


def corpus(w: Path, run: Path):
    ck = run / "final.ckpt"
    (w / "afile").write_text("x")
    (w / "latin1.toml").write_bytes("[model]\nhidden = 'caf\xe9'\n".encode("latin-1"))
    (w / "bad.toml").write_text("[model\nsizes = 3\n")
    (w / "notes.ckpt").write_text("lr = 0.1\n")
    raw = ck.read_bytes()
    (w / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(ck) as zin, zipfile.ZipFile(w / "huge.ckpt", "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename == "opt_state/0001.npy":
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                           "shape": (1 << 40,)})
                body = buf.getvalue()
            zout.writestr(info.filename, body)
    with zipfile.ZipFile(ck) as zin, zipfile.ZipFile(w / "bomb.ckpt", "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            body = zin.read(info) + (bytes(1 << 26) if info.filename == "params/0/W.npy" else b"")
            zout.writestr(info.filename, body)
    with np.load(ck) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(members["__funcnn_checkpoint__"].tobytes())
    meta["spec"]["hidden"] = "sigmoid"
    members["__funcnn_checkpoint__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(w / "edited.ckpt", "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **members)
    x = np.load(w / "x.npy")
    np.save(w / "complex.npy", x.astype(np.complex64))
    np.save(w / "strings.npy", np.array([["a"] * 64]))
    np.save(w / "empty.npy", np.zeros((0, 64), np.float32))
    np.save(w / "wide.npy", np.zeros((2, 5), np.float32))
    np.save(w / "nan.npy", np.full((2, 64), np.nan, np.float32))
    np.save(w / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (w / "nohead.csv").write_text("\n".join(",".join("0" for _ in range(64)) for _ in range(3)) + "\n")
    (w / "latin1.csv").write_bytes("caf\xe9,b\n1,2\n".encode("latin-1"))
    np.savez(w / "labels.npz", x=x, y=np.full(len(x), 12))
    np.savez(w / "nolabels.npz", x=x)
    (w / "x.txt").write_text("1,2\n")
    (w / "exists.npy").write_text("precious")
    bad_run = w / "badrun"
    bad_run.mkdir(exist_ok=True)
    for name in ("last.ckpt", "metrics.jsonl"):
        (bad_run / name).write_bytes((run / name).read_bytes())
    (bad_run / "config.json").write_text('{"model": ')
    two = CONFIGS / "two_lines.toml"
    E, N = "error", "noop"
    return [
        (E, ["train", w / "missing.toml"]), (E, ["train", CONFIGS]), (E, ["train", "/proc/self/mem"]),
        (E, ["train", w / "latin1.toml"]), (E, ["train", w / "bad.toml"]),
        (E, ["train", two, *sets(["model.hiden=tanh"])]), (E, ["train", two, *sets(["training.epochs=x"])]),
        (E, ["train", two, *sets(["training.epochs=0"])]), (E, ["train", two, "--set", "nonsense"]),
        (E, ["train", two, *sets(["training.batch_size=100000"]), "--out", w / "big"]),
        (E, ["train", two, "--out", w / "afile" / "run"]), (E, ["train", two, "--out", run]),
        (E, ["gradcheck", two, "--max-entries", "-5"]), (E, ["gradcheck", two, "--dtype", "float16"]),
        (E, ["evaluate", w / "missing.ckpt"]), (E, ["evaluate", w / "notes.ckpt"]), (E, ["evaluate", w / "cut.ckpt"]),
        (E, ["evaluate", w / "edited.ckpt"]), (E, ["evaluate", w / "huge.ckpt"]), (E, ["evaluate", w / "bomb.ckpt"]),
        (E, ["evaluate", ck, "--data", w / "labels.npz"]), (E, ["evaluate", ck, "--data", w / "nolabels.npz"]),
        (E, ["evaluate", ck, "--data", w / "nohead.csv", "--target", "y"]),
        (E, ["predict", ck, w / "complex.npy"]), (E, ["predict", ck, w / "strings.npy"]),
        (E, ["predict", ck, w / "empty.npy"]), (E, ["predict", ck, w / "wide.npy"]),
        (E, ["predict", ck, w / "nan.npy"]),
        (E, ["predict", ck, w / "object.npy"]), (E, ["predict", ck, w / "nohead.csv"]),
        (E, ["predict", ck, w / "latin1.csv"]), (E, ["predict", ck, w / "x.txt"]), (E, ["predict", ck, w / "nope.npy"]),
        (E, ["predict", ck, w / "x.npy", "--out", w / "exists.npy"]), (E, ["predict", ck, w / "x.npy", "--out", w]),
        (E, ["predict", ck, w / "x.npy", "--out", w / "x.npy", "--force"]),
        (E, ["resume", w / "nodir"]), (E, ["resume", w]), (E, ["resume", bad_run]), (N, ["resume", run]),
    ]


def same_run(a: Path, b: Path) -> bool:
    from funcnn import checkpoint

    if (a / "metrics.jsonl").read_bytes() != (b / "metrics.jsonl").read_bytes():
        return False
    for name in ("best.ckpt", "final.ckpt"):
        ca, cb = checkpoint.load(a / name), checkpoint.load(b / name)
        import jax

        for u, v in zip(jax.tree.leaves((ca.params, ca.opt_state_leaves, ca.step)),
                        jax.tree.leaves((cb.params, cb.opt_state_leaves, cb.step)), strict=True):
            if not np.array_equal(np.asarray(u), np.asarray(v)):
                return False
    return True


def kill_loop(w: Path, full: Path, kills: int, seed: int, window) -> tuple[int, int, int]:
    """(kills, runs that resumed to the end, of which exact)."""
    rnd, done, exact, n_kills = random.Random(seed), 0, 0, 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for i in range(kills):
        run = w / f"killed{i}"
        cmd = [sys.executable, "-m", "funcnn", "train", CONFIGS / "digits.toml", "--out", run, "--quiet",
               *sets(SMALL)]
        p = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random moment after a random number of epochs: start-up time varies with the load.
        after, metrics = rnd.randint(1, 6), run / "metrics.jsonl"
        while p.poll() is None and (not metrics.exists() or len(metrics.read_bytes().splitlines()) < after):
            time.sleep(0.02)
        time.sleep(rnd.uniform(*window))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            n_kills += 1
        p.wait()
        if not (run / "last.ckpt").exists():
            continue  # killed before the first epoch: nothing to resume, nothing lost
        r = funcnn("resume", run, "--quiet")
        done += r.returncode == 0
        exact += r.returncode == 0 and same_run(full, run)
        print(f"run {i}: killed={p.returncode == -signal.SIGKILL} resume rc={r.returncode} "
              f"exact={r.returncode == 0 and same_run(full, run)}", flush=True)
    return n_kills, done, exact


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a new working directory")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, nargs=2, default=(0.0, 0.6), metavar=("FROM", "TO"),
                    help="seconds after a random epoch's metrics line at which each run is killed")
    ap.add_argument("--no-corpus", action="store_true", help="only the SIGKILL loop")
    args = ap.parse_args()
    w = Path(args.out)
    w.mkdir(parents=True)
    full = w / "full"
    assert funcnn("train", CONFIGS / "digits.toml", "--out", full, "--quiet", *sets(SMALL)).returncode == 0
    from funcnn import data

    np.save(w / "x.npy", np.asarray(data.load_digits()[0][:8]))
    counts = {"clear": 0, "vague": 0, "traceback": 0, "silently accepted": 0}
    for expect, argv in ([] if args.no_corpus else corpus(w, full)):
        proc = funcnn(*argv)
        kind = classify(proc, expect)
        counts[kind] += 1
        if kind != "clear":
            print(f"{kind}: funcnn {' '.join(map(str, argv))}\n  {proc.stderr.strip()[-300:]}")
    kills, resumed, exact = kill_loop(w, full, args.kills, args.seed, args.window)
    print(f"CLI bad inputs tried {sum(counts.values())}: clear error {counts['clear']}, vague {counts['vague']}, "
          f"traceback {counts['traceback']}, silently accepted {counts['silently accepted']}")
    print(f"SIGKILLs during training {kills}: resumed to the end {resumed}, bit-identical to the uninterrupted "
          f"run (best.ckpt, final.ckpt arrays, metrics.jsonl) {exact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
