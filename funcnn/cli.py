"""The ``funcnn`` command: train, gradcheck, evaluate, predict, resume.

Every user error (bad config, missing file, corrupted checkpoint, divergence)
ends with one line on stderr, ``funcnn: error: ...``, and a non-zero exit code;
tracebacks are for bugs. This module and ``scripts/`` are the only places that
print.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import __version__, checkpoint, config as cfglib, data, experiment, parallel, train
from funcnn.app import explain, mistakes, playground
from funcnn.gradcheck import gradcheck as _gradcheck
from funcnn.network import describe

EXIT_USAGE, EXIT_FAILED = 2, 1


class UserError(Exception):
    """An error to report in one line, without a traceback."""


# ------------------------------------------------------------------------ small helpers


def _write_text(path: Path, text: str) -> None:
    """Writes a small text file atomically (temp file in the same directory, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_run_dir(cfg, config_path: str, out: str | None) -> Path:
    """Creates a new run directory; never reuses an existing one."""
    if out is not None:
        path = Path(out)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise UserError(f"--out {out} already exists; runs never overwrite each other: choose a new "
                            "directory (or leave --out out for a fresh time-stamped one).") from None
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.output.dir) / f"{Path(config_path).stem}-{stamp}"
    for i in range(1, 1000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not create a new run directory next to {base}")


def _standardizer_to_json(stats):
    return None if stats is None else {"mean": np.asarray(stats.mean).tolist(), "std": np.asarray(stats.std).tolist()}


def _standardizer_from_json(d, dtype):
    return None if not d else data.Standardizer(jnp.asarray(d["mean"], dtype), jnp.asarray(d["std"], dtype))


class _Progress:
    """A tqdm bar over epochs on a terminal; a concise line per epoch otherwise; nothing when quiet.

    Batches run inside one compiled call per epoch, so progress is per epoch:
    a per-batch bar would need a host sync per step.
    """

    def __init__(self, total: int, *, quiet: bool, first: int = 0):
        self.total, self.quiet, self.bar, self.t0 = total, quiet, None, time.perf_counter()
        self.every = max(1, total // 20)
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=first, unit="epoch", file=sys.stderr, dynamic_ncols=True)
            except ImportError:  # tqdm is a dependency, but a missing one is no reason to fail
                self.bar = None

    def update(self, epoch: int, m: dict) -> None:
        shown = {k: v for k, v in m.items() if k in ("train_loss", "val_loss", "val_accuracy")}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
            self.bar.update(1)
        elif not self.quiet and ((epoch + 1) % self.every == 0 or epoch + 1 == self.total or epoch == 0):
            parts = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            print(f"epoch {epoch + 1:>4}/{self.total}  {parts}  ({time.perf_counter() - self.t0:.1f} s)",
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _try_plots(cfg, run_dir: Path, net, params, history, report, split) -> list[str]:
    if not cfg.output.plots:
        return []
    try:
        from funcnn import plots
        import matplotlib  # noqa: F401  (the optional extra)
    except ImportError:
        return []
    # The title says what was trained (the run directory's name may be any --out, e.g. "tanh").
    title = f"{describe(net)}, {cfg.optimizer.name} on {cfg.data.name}"
    written = [plots.plot_history(history, run_dir / "history.png", title=title)]
    if report is not None:
        written.append(plots.plot_gradient_errors(report, run_dir / "gradcheck.png"))
    std = split.standardizer is not None
    if split.x_train.shape[1] == 2:
        written.append(plots.plot_decision_boundary(net, params, split.x_test, split.y_test,
                                                    run_dir / "decision_boundary.png", standardized=std))
    if split.x_train.shape[1] == 1 and net.output_size == 1 and net.output.decide is None:
        written.append(plots.plot_fit(net, params, split.x_test, split.y_test, run_dir / "fit.png", standardized=std))
    written += mistakes.train_plots(run_dir, cfglib.config_to_dict(cfg), net, params, split)
    return [str(p) for p in written]


# ------------------------------------------------------------------------ commands


def _gradcheck_first_batch(cfg, split, net, state, dtype=None, max_entries=500):
    bs = cfg.training.batch_size or min(256, split.x_train.shape[0])
    x, y = split.x_train[:bs], experiment.targets(net, split.y_train[:bs])
    return _gradcheck(net, state.params, x, y, dtype=dtype, max_entries=max_entries)


def _train_loop(cfg, run_dir: Path | None, split, net, opt, *, state=None, epochs_done=0, quiet=False,
                mesh=None):
    """Trains with per-epoch metrics.jsonl lines and checkpoints; returns the RunResult.

    ``run_dir=None`` (processes other than 0 of a distributed run) trains and writes nothing.
    """
    extra = {"standardizer": _standardizer_to_json(split.standardizer)}
    cfg_dict = cfglib.config_to_dict(cfg)
    total = 1 if opt is None else cfg.training.epochs
    progress = _Progress(total, quiet=quiet, first=epochs_done)
    best_val = [np.inf]

    def callback(epoch, m, st):
        if run_dir is None:
            return
        epoch += epochs_done
        line = dict(m, epoch=epoch)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        checkpoint.save(run_dir / "last.ckpt", st, spec=net.spec, config=cfg_dict,
                        extra=dict(extra, epoch=epoch), overwrite=True)
        if "val_loss" in m and m["val_loss"] < best_val[0]:
            best_val[0] = m["val_loss"]
            checkpoint.save(run_dir / "best.ckpt", st, spec=net.spec, config=cfg_dict,
                            extra=dict(extra, epoch=epoch), overwrite=True)
        progress.update(epoch, m)

    try:
        result = experiment.run(cfg, split, state=state, epochs=(cfg.training.epochs - epochs_done) or None,
                                callback=callback, mesh=mesh)
    finally:
        progress.close()
    if run_dir is None:
        return result
    final_extra = dict(extra, test=result.test, seconds=result.seconds)
    checkpoint.save(run_dir / "final.ckpt", result.state, spec=net.spec, config=cfg_dict, extra=final_extra,
                    overwrite=True)
    if not (run_dir / "best.ckpt").exists():  # no validation split: the final state is the best we know
        checkpoint.save(run_dir / "best.ckpt", result.state, spec=net.spec, config=cfg_dict,
                        extra=final_extra, overwrite=True)
    return result


def _history_from_jsonl(run_dir: Path) -> dict:
    hist = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        for k in hist:
            if k in m:
                hist[k].append(m[k])
    return hist


def _summary(run_dir, result, report, seconds_total, plots) -> str:
    t = result.test
    lines = ["", f"funcnn {__version__} - run {run_dir}"]
    if report is not None:
        worst = {r: report.worst(r) for r in ("reverse", "forward", "finite_diff")}
        lines.append(f"gradient check (first batch, {report.dtype}): {'PASSED' if report.passed else 'FAILED'} - "
                     "worst relative error of the hand-derived gradient vs "
                     + ", ".join(f"{n} {w.max_rel:.1e}" for n, w in
                                 (("jax.grad", worst["reverse"]), ("forward mode", worst["forward"]),
                                  ("finite differences", worst["finite_diff"]))))
    if "accuracy" in t:
        lines.append(f"test accuracy: {t['accuracy']:.4f}   test loss: {t['loss']:.4f}"
                     + (f"   macro F1: {t['macro_f1']:.4f}" if "macro_f1" in t else ""))
    else:
        lines.append(f"test MSE: {t['mse']:.3g}   RMSE: {t['rmse']:.3g}   R^2: {t['r2']:.4f}")
    lines.append(f"training time: {result.seconds:.2f} s (compilation included); total {seconds_total:.2f} s")
    lines.append(f"outputs: {run_dir}/  (config.json, metrics.jsonl, final.ckpt, best.ckpt, last.ckpt, "
                 "gradcheck.txt, summary.json" + (", plots" if plots else "") + ")")
    return "\n".join(lines)


def _distributed_mesh(args):
    """None, or the data mesh over every device of every process (joining the cluster first)."""
    given = [f for f, v in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                            ("--process-id", args.process_id)) if v is not None]
    if not args.distributed:
        if given:
            raise UserError(f"{', '.join(given)} only apply with --distributed.")
        return None
    try:
        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    except (RuntimeError, ValueError) as e:  # no coordinator given or found, or it cannot be reached
        raise UserError(f"--distributed could not join the run: {str(e).rstrip('.')}. Give --coordinator, "
                        "--num-processes and --process-id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID), run under srun, or pass --num-processes 1 for this process's "
                        "devices only.") from None
    return parallel.data_mesh()


def cmd_train(args) -> int:
    t0 = time.perf_counter()
    cfg = cfglib.load_config(args.config, args.set)
    mesh = _distributed_mesh(args)  # before any JAX computation
    if mesh is not None and not parallel.is_main_process():  # trains; process 0 writes and prints
        split = experiment.load_split(cfg)
        net, opt = experiment.build(cfg, split.x_train.shape[0])
        _train_loop(cfg, None, split, net, opt, quiet=True, mesh=mesh)
        return 0
    split = experiment.load_split(cfg)  # before the run dir: bad data makes no empty run
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    run_dir = _new_run_dir(cfg, args.config, args.out)
    _write_text(run_dir / "config.json", json.dumps(cfglib.config_to_dict(cfg), indent=2) + "\n")
    report = None
    if cfg.output.gradcheck:
        report = _gradcheck_first_batch(cfg, split, net, experiment.initial_state(cfg, net, opt))
        _write_text(run_dir / "gradcheck.txt", str(report) + "\n")
        if not args.quiet:
            print(report.title.replace("gradcheck: ", "gradient check on the first batch: ")
                  + (" - PASSED" if report.passed else " - FAILED"), flush=True)
    result = _train_loop(cfg, run_dir, split, net, opt, quiet=args.quiet, mesh=mesh)
    return _finish(cfg, run_dir, split, net, result, report, t0, args.quiet)


def _finish(cfg, run_dir, split, net, result, report, t0, quiet) -> int:
    plots = _try_plots(cfg, run_dir, net, result.state.params, _history_from_jsonl(run_dir), report, split)
    summary = {"test": result.test, "training_seconds": result.seconds,
               "gradcheck_passed": None if report is None else report.passed,
               "gradcheck_worst": None if report is None else
               {r: report.worst(r).max_rel for r in ("reverse", "forward", "finite_diff")},
               "plots": plots}
    _write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    text = _summary(run_dir, result, report, time.perf_counter() - t0, plots)
    print(text if not quiet else text.strip().splitlines()[1 if report is None else 2], flush=True)
    return 0


def cmd_resume(args) -> int:
    t0 = time.perf_counter()
    run_dir = Path(args.run_dir)
    for name in ("config.json", "last.ckpt", "metrics.jsonl"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir} is not a resumable run directory: {name} is missing.")
    cfg = cfglib.config_from_dict(json.loads((run_dir / "config.json").read_text()))
    if cfg.optimizer.name == "lbfgs":
        raise UserError("an L-BFGS run is one compiled minimisation and cannot be resumed; train it again.")
    ckpt = checkpoint.load(run_dir / "last.ckpt")
    done = int(ckpt.extra.get("epoch", -1)) + 1
    split = experiment.load_split(cfg)
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    if done >= cfg.training.epochs:
        print(f"{run_dir}: all {cfg.training.epochs} epochs are done; nothing to resume.")
        return 0
    # metrics.jsonl may hold epochs after the last checkpoint if a run died between
    # the two writes: keep exactly the epochs the checkpoint has.
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:done]
    _write_text(run_dir / "metrics.jsonl", "".join(l + "\n" for l in lines))
    state = checkpoint.restore_state(ckpt, opt)
    if not args.quiet:
        print(f"resuming {run_dir} at epoch {done + 1}/{cfg.training.epochs}", flush=True)
    result = _train_loop(cfg, run_dir, split, net, opt, state=state, epochs_done=done, quiet=args.quiet)
    return _finish(cfg, run_dir, split, net, result, None, t0, args.quiet)  # no gradient check on resume


def cmd_gradcheck(args) -> int:
    cfg = cfglib.load_config(args.config, args.set)
    split = experiment.load_split(cfg)
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    state = experiment.initial_state(cfg, net, opt)
    report = _gradcheck_first_batch(cfg, split, net, state, dtype=args.dtype,
                                    max_entries=None if args.max_entries == 0 else args.max_entries)
    print(report)
    return 0 if report.passed else EXIT_FAILED


def _load_inputs(path: str, target: str | None):
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such input file: {path}")
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False), None
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z:
                raise UserError(f"{path} must hold an array named 'x' (and 'y' for evaluate); it has {list(z)}.")
            return z["x"], (z["y"] if "y" in z else None)
    if p.suffix == ".csv":
        if target is None:
            rows = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
            return rows, None
        return data.load_csv(p, target=target)
    raise UserError(f"input {path} must be .npy, .npz or .csv; got {p.suffix or 'no suffix'}.")


def _ckpt_inputs(ckpt, x):
    dtype = jax.tree.leaves(ckpt.params)[0].dtype
    x = jnp.asarray(x, dtype)
    stats = _standardizer_from_json(ckpt.extra.get("standardizer"), dtype)
    return x if stats is None else data.standardize_apply(stats, x)


def cmd_evaluate(args) -> int:
    ckpt = checkpoint.load(args.checkpoint)
    net = ckpt.net
    if args.data is None:
        if ckpt.config is None:
            raise UserError(f"{args.checkpoint} stores no config; pass --data FILE with inputs and labels.")
        split = experiment.load_split(cfglib.config_from_dict(ckpt.config))
        x, y, where = split.x_test, split.y_test, "the config's test split"
    else:
        x, y = _load_inputs(args.data, args.target)
        if y is None:
            raise UserError(f"{args.data} has no labels: an .npz needs an array 'y', a .csv needs --target.")
        x, y, where = _ckpt_inputs(ckpt, x), jnp.asarray(y), args.data
    report = experiment.evaluate_split(net, ckpt.params, x, y)
    print(f"{args.checkpoint} on {where} ({x.shape[0]} samples)")
    print(f"loss {report['loss']:.6f}")
    if "mse" in report:
        print(f"MSE {report['mse']:.6g}  RMSE {report['rmse']:.6g}  R^2 {report['r2']:.6f}")
        return 0
    print(f"accuracy {report['accuracy']:.4f}")
    if "confusion_matrix" in report:
        cm = np.asarray(report["confusion_matrix"], int)
        print("confusion matrix (rows: true class, columns: predicted)")
        print("      " + " ".join(f"{j:>5}" for j in range(cm.shape[1])))
        for i, row in enumerate(cm):
            print(f"{i:>5} " + " ".join(f"{v:>5}" for v in row))
        print(f"{'class':>5} {'precision':>10} {'recall':>8} {'f1':>8} {'support':>8}")
        for i in range(cm.shape[0]):
            print(f"{i:>5} {report['precision'][i]:>10.4f} {report['recall'][i]:>8.4f} {report['f1'][i]:>8.4f} "
                  f"{int(report['support'][i]):>8}")
        print(f"{'macro':>5} {report['macro_precision']:>10.4f} {report['macro_recall']:>8.4f} "
              f"{report['macro_f1']:>8.4f}")
    return 0


def cmd_predict(args) -> int:
    ckpt = checkpoint.load(args.checkpoint)
    x, _ = _load_inputs(args.input, None)
    if x.ndim != 2 or x.shape[1] != ckpt.net.input_size:
        raise UserError(f"{args.input} must hold rows of {ckpt.net.input_size} features; got shape {x.shape}.")
    x = _ckpt_inputs(ckpt, x)
    out = np.asarray(ckpt.net.predict(ckpt.params, x) if args.labels else ckpt.net.apply(ckpt.params, x))
    if args.out:
        np.save(args.out, out, allow_pickle=False)
        print(f"wrote {out.shape} to {args.out}")
    else:
        np.savetxt(sys.stdout, out.reshape(out.shape[0], -1), fmt="%d" if args.labels else "%.6g", delimiter=",")
    return 0


# ------------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="funcnn", description="Train, check and use funcnn MLPs (hand-derived backprop on JAX).",
        epilog="Run 'funcnn COMMAND --help' for a command's options. Configs: see configs/*.toml.")
    ap.add_argument("--version", action="version", version=f"funcnn {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    set_help = "override a config value, e.g. --set model.hidden=tanh (repeatable; same checks as the file)"

    p = sub.add_parser("train", help="train as a config says; writes a new run directory",
                       description="Train as CONFIG says. Writes a new run directory holding the resolved "
                       "config (config.json), metrics.jsonl (one line per epoch), last/best/final "
                       "checkpoints, the gradient check of the first batch and, with matplotlib, plots.")
    p.add_argument("config", help="a TOML config, e.g. configs/digits.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", help="the run directory to create (must not exist); default: "
                   "<output.dir>/<config name>-<date>-<time>")
    p.add_argument("--quiet", action="store_true", help="no progress; print only the final result line")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over every device of every process (training.batch_size must be a "
                   "multiple of the device count); joins the cluster named by the three flags below, else "
                   "by JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, else as SLURM/Open MPI "
                   "say; --num-processes 1 uses this process's devices only. Process 0 writes and prints")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, reachable from every process")
    p.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    p.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 <= I < N")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("gradcheck", help="hand-derived vs reverse, forward mode and finite differences",
                       description="Compare the hand-derived gradient of CONFIG's network (initial "
                       "parameters, first training batch) with jax.grad, forward mode and float64 "
                       "finite differences, per layer and leaf. Exit code 1 if any comparison fails.")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="precision of the gradients compared (default: the config's training.dtype); "
                   "finite differences are always float64")
    p.add_argument("--max-entries", type=int, default=500,
                   help="per leaf, entries checked by forward mode and finite differences (0: all)")
    p.set_defaults(fn=cmd_gradcheck)

    p = sub.add_parser("evaluate", help="loss, accuracy, confusion matrix, precision/recall/F1 or MSE/R^2",
                       description="Evaluate a checkpoint on its config's test split (re-created from the "
                       "stored seed) or on --data.")
    p.add_argument("checkpoint", help="a .ckpt file from a run directory")
    p.add_argument("--data", help="inputs and labels: .npz with arrays x and y, or .csv with --target")
    p.add_argument("--target", help="the label column of a --data .csv")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("predict", help="outputs or predicted labels for new inputs",
                       description="Apply a checkpoint's network (and its stored standardisation) to INPUT.")
    p.add_argument("checkpoint")
    p.add_argument("input", help="rows of features: .npy, .npz (array x) or .csv with a header row")
    p.add_argument("--labels", action="store_true", help="print predicted labels instead of outputs")
    p.add_argument("--out", help="save the result as .npy instead of printing it")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint",
                       description="Continue RUN_DIR from last.ckpt; the result is bit-identical to an "
                       "uninterrupted run on CPU.")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_resume)

    playground.register(sub)
    explain.register(sub)
    mistakes.register(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except train.DivergenceError as e:
        print(f"funcnn: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # e.g. `funcnn evaluate ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except (UserError, ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        print(f"funcnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
