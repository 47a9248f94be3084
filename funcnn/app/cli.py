"""The ``funcnn`` command: train, gradcheck, evaluate, predict, resume.

Every user error (bad config, missing file, corrupted checkpoint, divergence,
an OS error such as a full disk or a read-only directory) ends with one line on
stderr, ``funcnn: error: ...``, and a non-zero exit code. Only funcnn's own
error types (``funcnn.errors.FuncnnError``) and OS errors are caught: any other
exception is a bug and keeps its traceback. This module and ``scripts/`` are
the only places that print.

Nothing the user saved is overwritten without an explicit flag; every file is
written atomically; a process training in a run directory holds its lock.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import errno
import importlib.util
import io
import json
import math
import os
import stat
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import __version__, _checks, _files, checkpoint, data, parallel, train
from funcnn.app import config as cfglib
from funcnn.app import experiment, explain, mistakes, playground, sweep
from funcnn.errors import FuncnnError
from funcnn.gradcheck import gradcheck as _gradcheck
from funcnn.network import describe

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class UserError(FuncnnError):
    """An error to report in one line, without a traceback; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _say(quiet: bool, message: str) -> None:
    """A progress line on stderr (stdout keeps the results), unless quiet.

    Said before each step that takes a while (loading, compiling, checking,
    plotting), so the screen is never blank for long.
    """
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ compilation cache

NO_COMPILE_CACHE_ENV = "FUNCNN_NO_COMPILE_CACHE"  # set (to anything but "" or "0") to turn the cache off
# Every program is written (JAX's default skips those compiling in under 1 s,
# which is all of them here): reading a small one back is still faster than
# compiling it, and a run writes only a few dozen.
_CACHE_MIN_COMPILE_SECONDS = 0.0


def compile_cache_dir() -> Path:
    """Where the CLI keeps JAX's persistent compilation cache: ``$XDG_CACHE_HOME/funcnn/jax``
    (an absolute ``XDG_CACHE_HOME``, as the XDG spec says), else ``~/.cache/funcnn/jax``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "funcnn" / "jax"


def _private_cache_dir() -> tuple[Path | None, str]:
    """(the cache directory, created 0700 if missing) or (None, why it is not used).

    The cache holds compiled code that JAX loads and runs, so it must be ours
    alone: a directory owned by someone else, or writable by the group or by
    everyone (``funcnn/`` or ``funcnn/jax``), or a symbolic link, is refused.
    """
    path = compile_cache_dir()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        return None, f"it cannot be created ({e.strerror or e})"
    for d in (path.parent, path):
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            return None, f"{d} is not a directory (a symbolic link?)"
        if st.st_uid != os.getuid():
            return None, f"{d} belongs to another user"
        if st.st_mode & 0o022:
            return None, f"{d} is writable by others (mode {stat.S_IMODE(st.st_mode):o}; chmod 700 it)"
    return path, ""


def _use_compile_cache(off: bool) -> Path | None:
    """Turns on JAX's persistent compilation cache for this process, unless off; returns its directory.

    A second run of the same config then loads its programs instead of
    compiling them. Off with ``--no-compile-cache`` or ``FUNCNN_NO_COMPILE_CACHE=1``.
    """
    if off or os.environ.get(NO_COMPILE_CACHE_ENV, "") not in ("", "0"):
        return None
    path, why = _private_cache_dir()
    if path is None:
        print(f"funcnn: warning: not using the compilation cache at {compile_cache_dir()}: {why}. "
              f"Runs compile from scratch; set {NO_COMPILE_CACHE_ENV}=1 to silence this.", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _CACHE_MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# ------------------------------------------------------------------------ small helpers


_write_text = _files.write_text  # atomic, mode 0666 less the umask like the checkpoints


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


def _use_dtype(cfg) -> None:
    """Enables 64-bit JAX for a float64 run, before any array exists: the run is what config.json says."""
    if experiment.dtype_of(cfg) == jnp.float64 and not _checks.x64_enabled():
        jax.config.update("jax_enable_x64", True)


def _load_checkpoint(path: str) -> checkpoint.Checkpoint:
    """``checkpoint.load``, with 64-bit JAX enabled first when the file holds a float64 run."""
    try:
        return checkpoint.load(path)
    except checkpoint.NeedsX64Error:
        jax.config.update("jax_enable_x64", True)
        return checkpoint.load(path)


def _best_to_json(best: train.BestSoFar) -> dict:
    return {"loss": best.loss if math.isfinite(best.loss) else None, "epoch": best.epoch, "since": best.since}


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


def _will_plot(cfg) -> bool:
    """Plots are asked for and matplotlib (the optional extra) is installed; nothing imported yet."""
    return bool(cfg.output.plots) and importlib.util.find_spec("matplotlib") is not None


def _try_plots(cfg, run_dir: Path, net, params, history, report, split) -> list[str]:
    if not _will_plot(cfg):
        return []
    from funcnn.app import plots

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


# The check before training samples fewer entries than `funcnn gradcheck` (500
# per leaf, eps sweep over 64): every leaf is still compared with reverse mode in
# full and with forward mode and finite differences on 32 entries (half the
# largest, half at random), in a fraction of a second instead of seconds. A
# wrong derivative shows in any sample; `funcnn gradcheck` is the thorough look.
TRAIN_CHECK = {"max_entries": 32, "sweep_entries": 8}


def _gradcheck_first_batch(cfg, split, net, state, dtype=None, max_entries=500, sweep_entries=64):
    bs = cfg.training.batch_size or min(256, split.x_train.shape[0])
    # Sliced on the host: an eager slice of a device array compiles a program.
    x, y = np.asarray(split.x_train)[:bs], jnp.asarray(np.asarray(split.y_train)[:bs])
    return _gradcheck(net, state.params, x, experiment.targets(net, y), dtype=dtype, max_entries=max_entries,
                      sweep_entries=sweep_entries)


def _train_loop(cfg, run_dir: Path | None, split, net, opt, *, state=None, epochs_done=0, best=None,
                quiet=False, mesh=None):
    """Trains with per-epoch metrics.jsonl lines and checkpoints; returns the RunResult.

    After each epoch: its metrics line, then ``best.ckpt`` if it is the best so
    far, then ``last.ckpt``, which holds the best-so-far and the early-stopping
    count: it is what ``resume`` continues from, so it is written last.
    ``run_dir=None`` (processes other than 0 of a distributed run) trains and writes nothing.
    """
    extra = {"standardizer": checkpoint.standardizer_to_json(split.standardizer),
             **({"classes": split.classes} if split.classes is not None else {})}  # csv string labels
    cfg_dict = cfglib.config_to_dict(cfg)
    total = 1 if opt is None else cfg.training.epochs
    progress = _Progress(total, quiet=quiet, first=epochs_done)
    tracked = [train.NO_BEST if best is None else best]
    last_done = [epochs_done - 1]

    def save(name, st, **more):
        checkpoint.save(run_dir / name, st, spec=net.spec, config=cfg_dict, extra=dict(extra, **more),
                        overwrite=True)

    def callback(epoch, m, st):
        if run_dir is None:
            return
        _files.append_line(run_dir / "metrics.jsonl", json.dumps(dict(m, epoch=epoch)))
        if "val_loss" in m:
            tracked[0] = train.track_best(tracked[0], epoch, m["val_loss"], None)  # params: in best.ckpt
            if tracked[0].epoch == epoch:
                save("best.ckpt", st, epoch=epoch)
        save("last.ckpt", st, epoch=epoch, best=_best_to_json(tracked[0]))
        last_done[0] = epoch
        progress.update(epoch, m)

    try:
        result = experiment.run(cfg, split, state=state, epochs=(cfg.training.epochs - epochs_done) or None,
                                callback=callback, mesh=mesh, first_epoch=epochs_done, best=best)
    except train.DivergenceError as e:
        where = "it is not saved (a process other than 0)"
        if run_dir is not None:
            save("diverged.ckpt", e.state, epoch=e.epoch, diverged={"epoch": e.epoch, "step": e.step})
            where = f"it is saved in {run_dir / 'diverged.ckpt'}"
        raise UserError(f"training diverged: the loss became NaN or inf in epoch {e.epoch + 1} of {total}, at "
                        f"its step {e.step + 1}; the last finite state (global step {int(e.state.step)}) is kept: "
                        f"{where}. Try a lower learning rate or gradient clipping.", EXIT_FAILED) from None
    except KeyboardInterrupt:
        at = min(last_done[0] + 2, total)
        hint = f"; continue with `funcnn resume {run_dir}`" if run_dir is not None and last_done[0] >= 0 else ""
        raise UserError(f"interrupted at epoch {at} of {total}{hint}", EXIT_INTERRUPTED) from None
    finally:
        progress.close()
    if run_dir is None:
        return result
    final_extra = dict(extra, test=result.test, seconds=result.seconds)
    save("final.ckpt", result.state, test=result.test, seconds=result.seconds)
    if not (run_dir / "best.ckpt").exists():  # no validation split: the final state is the best we know
        checkpoint.save(run_dir / "best.ckpt", result.state, spec=net.spec, config=cfg_dict,
                        extra=final_extra, overwrite=True)
    return result


def _history_from_jsonl(run_dir: Path) -> dict:
    # iteration_losses: a full-batch run's (L-BFGS, Hessian-free) one line holds its loss per iteration.
    hist: dict[str, list] = {"train_loss": [], "val_loss": [], "val_accuracy": [], "iteration_losses": []}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        for k in hist:
            if k in m:
                hist[k] += m[k] if k == "iteration_losses" else [m[k]]
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


def _check_batch_size(cfg, n_train: int) -> None:
    if cfg.optimizer.name not in cfglib.FULL_BATCH and cfg.training.batch_size is not None:
        data.check_batch_size(cfg.training.batch_size, n_train, name="training.batch_size")


def cmd_train(args) -> int:
    if args.seeds is not None:  # K seeds at once: funcnn.app.sweep
        if args.distributed:
            raise UserError("--seeds trains K models on one device (fit_many); it does not run with --distributed.")
        return sweep.cmd_train_seeds(args, _new_run_dir, _write_text)
    t0 = time.perf_counter()
    cfg = cfglib.load_config(args.config, args.set)
    _use_dtype(cfg)
    mesh = _distributed_mesh(args)  # before any JAX computation
    if mesh is not None and not parallel.is_main_process():  # trains; process 0 writes and prints
        split = experiment.load_split(cfg)
        net, opt = experiment.build(cfg, split.x_train.shape[0])
        _train_loop(cfg, None, split, net, opt, quiet=True, mesh=mesh)
        return 0
    _say(args.quiet, f"loading the {cfg.data.name} data...")
    split = experiment.load_split(cfg)  # before the run dir: bad data makes no empty run
    _check_batch_size(cfg, split.x_train.shape[0])
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    run_dir = _new_run_dir(cfg, args.config, args.out)
    with _files.run_lock(run_dir):
        return _train_in(args, cfg, run_dir, split, net, opt, mesh, t0)


def _train_in(args, cfg, run_dir, split, net, opt, mesh, t0) -> int:
    _write_text(run_dir / "config.json", json.dumps(cfglib.config_to_dict(cfg), indent=2) + "\n")
    report = None
    if cfg.output.gradcheck:
        _say(args.quiet, "checking the hand-derived gradient on the first batch (compiling the check)...")
        report = _gradcheck_first_batch(cfg, split, net, experiment.initial_state(cfg, net, opt), **TRAIN_CHECK)
        _write_text(run_dir / "gradcheck.txt", str(report) + "\n")
        if not args.quiet:
            print(report.title.replace("gradcheck: ", "gradient check on the first batch: ")
                  + (" - PASSED" if report.passed else " - FAILED"), flush=True)
    _say(args.quiet, "compiling the training program...")
    result = _train_loop(cfg, run_dir, split, net, opt, quiet=args.quiet, mesh=mesh)
    return _finish(cfg, run_dir, split, net, result, report, t0, args.quiet)


def _finish(cfg, run_dir, split, net, result, report, t0, quiet) -> int:
    """Writes summary.json, prints the summary, then draws the plots (the answer first: plots take a second)."""
    summary = {"test": result.test, "training_seconds": result.seconds,
               "gradcheck_passed": None if report is None else report.passed,
               "gradcheck_worst": None if report is None else
               {r: report.worst(r).max_rel for r in ("reverse", "forward", "finite_diff")},
               "plots": []}
    _write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    will_plot = _will_plot(cfg)
    text = _summary(run_dir, result, report, time.perf_counter() - t0, will_plot)
    print(text if not quiet else text.strip().splitlines()[1 if report is None else 2], flush=True)
    if will_plot:
        _say(quiet, "drawing plots...")
        summary["plots"] = _try_plots(cfg, run_dir, net, result.state.params, _history_from_jsonl(run_dir),
                                      report, split)
        _write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0


def cmd_resume(args) -> int:
    t0 = time.perf_counter()
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory (no such directory).")
    for name, why in (("final.ckpt", "it finished"), ("diverged.ckpt", "it diverged")):
        if (run_dir / name).exists():  # for any reason: all epochs, early stopping, divergence
            print(f"{run_dir}: {why} ({name} exists); nothing to resume, nothing was changed.")
            return 0
    for name in ("config.json", "last.ckpt", "metrics.jsonl"):
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir} is not a resumable run directory: {name} is missing.")
    with _files.run_lock(run_dir):
        return _resume_in(args, run_dir, t0)


def _read_run_config(run_dir: Path):
    path = run_dir / "config.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not valid UTF-8 JSON ({type(e).__name__}: {e}); it is the run's "
                        "resolved config and cannot be guessed: restore it, or train again.") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} must hold a JSON object {{section: {{key: value}}}}; got {type(d).__name__}.")
    try:
        return cfglib.config_from_dict(d)
    except cfglib.ConfigError as e:
        raise UserError(f"{path}: {e}") from None


def _resumed_best(run_dir: Path, ckpt) -> train.BestSoFar | None:
    """The best-so-far that last.ckpt recorded, with its parameters from best.ckpt."""
    b = ckpt.extra.get("best")
    if not isinstance(b, dict) or b.get("epoch") is None:
        return None
    params = None
    if (run_dir / "best.ckpt").exists():
        best_ckpt = checkpoint.load(run_dir / "best.ckpt")
        if best_ckpt.extra.get("epoch") == b["epoch"]:
            params = best_ckpt.params
        # else: killed between the two saves; that epoch is recomputed and is the best again.
    return train.BestSoFar(float(b["loss"]), int(b["epoch"]), params, int(b["since"]))


def _resume_in(args, run_dir: Path, t0) -> int:
    cfg = _read_run_config(run_dir)
    _use_dtype(cfg)
    if cfg.optimizer.name in cfglib.FULL_BATCH:
        raise UserError(f"an optimizer.name={cfg.optimizer.name!r} run is one compiled minimisation and cannot "
                        "be resumed; train it again.")
    _files.remove_stale_temps(run_dir)  # left by a kill during a save; we hold the lock
    ckpt = checkpoint.load(run_dir / "last.ckpt")
    done = int(ckpt.extra.get("epoch", -1)) + 1
    best = _resumed_best(run_dir, ckpt)
    split = experiment.load_split(cfg)
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    patience = cfg.training.early_stopping
    stopped = patience is not None and best is not None and best.since >= patience
    if done >= cfg.training.epochs or stopped:  # killed after the last epoch, before final.ckpt
        state = checkpoint.restore_state(ckpt, opt)
        if stopped and best is not None and best.params is not None:
            state = state._replace(params=best.params)
        result = experiment.RunResult(state, None, experiment.evaluate_split(net, state.params, split.x_test,
                                                                             split.y_test), 0.0)
        _finish_files(cfg, run_dir, net, result)
        return _finish(cfg, run_dir, split, net, result, None, t0, args.quiet)
    # metrics.jsonl may hold epochs after the last checkpoint if a run died between
    # the two writes: keep exactly the epochs the checkpoint has.
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[:done]
    _write_text(run_dir / "metrics.jsonl", "".join(l + "\n" for l in lines))
    state = checkpoint.restore_state(ckpt, opt)
    if not args.quiet:
        print(f"resuming {run_dir} at epoch {done + 1}/{cfg.training.epochs}", flush=True)
    result = _train_loop(cfg, run_dir, split, net, opt, state=state, epochs_done=done, best=best,
                         quiet=args.quiet)
    return _finish(cfg, run_dir, split, net, result, None, t0, args.quiet)  # no gradient check on resume


def _finish_files(cfg, run_dir, net, result) -> None:
    """final.ckpt (and best.ckpt without validation) for a run whose epochs were all done."""
    extra = {"standardizer": checkpoint.load(run_dir / "last.ckpt").extra.get("standardizer")}
    cfg_dict = cfglib.config_to_dict(cfg)
    final_extra = dict(extra, test=result.test, seconds=result.seconds)
    checkpoint.save(run_dir / "final.ckpt", result.state, spec=net.spec, config=cfg_dict, extra=final_extra,
                    overwrite=True)
    if not (run_dir / "best.ckpt").exists():
        checkpoint.save(run_dir / "best.ckpt", result.state, spec=net.spec, config=cfg_dict,
                        extra=final_extra, overwrite=True)


def cmd_gradcheck(args) -> int:
    if args.max_entries < 0:
        raise UserError(f"--max-entries must be >= 0 (0: every entry); got {args.max_entries}.")
    cfg = cfglib.load_config(args.config, args.set)
    _use_dtype(cfg)
    if args.dtype == "float64" and not _checks.x64_enabled():
        jax.config.update("jax_enable_x64", True)
    split = experiment.load_split(cfg)
    _check_batch_size(cfg, split.x_train.shape[0])
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    state = experiment.initial_state(cfg, net, opt)
    report = _gradcheck_first_batch(cfg, split, net, state, dtype=args.dtype,
                                    max_entries=None if args.max_entries == 0 else args.max_entries)
    print(report)
    return 0 if report.passed else EXIT_FAILED


def _load_inputs(path: str, target: str | None, num_features: int):
    """``(x, y or None)`` from a .npy, .npz or .csv file; x is checked: real, non-empty ``[n, num_features]``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such input file: {path}" if not p.exists() else f"input {path} is not a file.")
    y = None
    if p.suffix == ".npy":
        x = _npy(p, lambda f: np.load(f, allow_pickle=False))
    elif p.suffix == ".npz":
        def read(f):
            with np.load(f, allow_pickle=False) as z:
                if "x" not in z:
                    raise UserError(f"{path} must hold an array named 'x' (and 'y' for evaluate); it has "
                                    f"{list(z)}.")
                return z["x"], z.get("y")
        x, y = _npy(p, read)
    elif p.suffix == ".csv":
        x, y = (data.load_csv_features(p), None) if target is None else _csv_with_labels(p, target)
    else:
        raise UserError(f"input {path} must be .npy, .npz or .csv; got {p.suffix or 'no suffix'}.")
    if not isinstance(x, (np.ndarray, jax.Array)):
        raise UserError(f"{path} must hold one array; got {type(x).__name__}.")
    return _checks.feature_rows(path, x, num_features), y  # the checks Checkpoint.preprocess makes


def _csv_with_labels(p: Path, target):
    """``(x, y)`` of a labelled CSV; string labels come back as a NumPy array of the names (mapped later)."""
    x, y, classes = data.load_csv(p, target=target, return_classes=True)
    return x, (y if classes is None else np.asarray(classes)[np.asarray(y)])


def _eval_targets(args, ckpt, x, y):
    """The labels or targets of ``--data`` as the checkpoint's network scores them.

    A regression model's targets become ``[n, k]`` float rows (a CSV column is read
    ``[n]``); string labels become indices into the classes stored at training.
    """
    y = np.asarray(y)
    if y.dtype.kind == "U":
        classes = ckpt.extra.get("classes")
        if classes is None:
            raise UserError(f"{args.data}: the labels are names ({', '.join(sorted(set(y.tolist()))[:5])}, ...) "
                            f"but {args.checkpoint} was trained on numeric labels; give numeric labels.")
        unseen = sorted(set(y.tolist()) - set(classes))
        if unseen:
            raise UserError(f"{args.data}: labels {unseen} are not among the classes the model was trained on "
                            f"({classes}).")
        y = np.searchsorted(np.asarray(classes), y).astype(np.int32)
    if y.dtype.kind not in "biuf" or y.shape[:1] != x.shape[:1]:
        raise UserError(f"{args.data}: y must be {x.shape[0]} numeric labels or targets; got "
                        f"{y.dtype} {y.shape}.")
    if ckpt.net.output.decide is None:  # regression: the outputs are [n, k] predictions
        y = y.astype(np.float32).reshape(y.shape[0], -1)
    return jnp.asarray(y)


def _npy(p: Path, read):
    """Reads a .npy/.npz file, saying in one line what is wrong with one that is not readable as such."""
    try:
        with open(p, "rb") as f:
            return read(f)
    except UserError:
        raise
    except ValueError as e:  # NumPy: a pickled/object array, a bad header, a truncated file
        why = "holds Python objects (pickled data is never loaded)" if "pickle" in str(e) else \
            f"is not a readable {p.suffix} file ({e})"
        raise UserError(f"input {p} {why}.") from None
    except (EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise UserError(f"input {p} is not a readable {p.suffix} file ({type(e).__name__}: {e}).") from None


def _stored_split(args, ckpt):
    """The test split the checkpoint's config re-creates; files it names are read only with --run-data."""
    if ckpt.config is None:
        raise UserError(f"{args.checkpoint} stores no config; pass --data FILE with inputs and labels.")
    try:
        cfg = cfglib.config_from_dict(ckpt.config)
    except cfglib.ConfigError as e:
        raise UserError(f"{args.checkpoint}: its stored config is invalid ({e}); pass --data FILE.") from None
    if cfg.data.name in experiment.FILE_DATASETS and not args.run_data:
        raise UserError(f"{args.checkpoint} was trained on files (data.name={cfg.data.name!r}, data.path="
                        f"{cfg.data.path!r}); a checkpoint never chooses which files to read: pass --data FILE, "
                        "or --run-data to re-create the run's test split from that path.")
    return experiment.load_split(cfg)


def cmd_evaluate(args) -> int:
    ckpt = _load_checkpoint(args.checkpoint)
    net = ckpt.net
    if args.data is None:
        split = _stored_split(args, ckpt)
        x, y, where = split.x_test, split.y_test, "the config's test split"
    else:
        x, y = _load_inputs(args.data, args.target, net.input_size)
        if y is None:
            raise UserError(f"{args.data} has no labels: an .npz needs an array 'y', a .csv needs --target.")
        x, y, where = ckpt.preprocess(x), _eval_targets(args, ckpt, x, y), args.data
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


def _check_out(out: str, force: bool, inputs: list[str]) -> Path:
    """The exact path --out names, refused before any work if writing it would lose something."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out} is a directory; give the file to write, e.g. {path / 'predictions.npy'}.")
    if any(path.resolve() == Path(i).resolve() for i in inputs):
        raise UserError(f"--out {out} is one of this command's inputs; choose another file.")
    if path.exists() and not force:
        raise UserError(f"--out {out} already exists; pass --force to replace it, or choose another file.")
    if not path.parent.is_dir():
        raise UserError(f"--out {out}: directory {path.parent} does not exist (create it first).")
    return path


def cmd_predict(args) -> int:
    out = None if args.out is None else _check_out(args.out, args.force, [args.checkpoint, args.input])
    ckpt = _load_checkpoint(args.checkpoint)
    if args.labels and ckpt.net.output.decide is None:
        raise UserError(f"--labels: {args.checkpoint} is a regression model ({ckpt.net.output.name} output): "
                        "its outputs are the predictions and it has no labels; drop --labels.")
    x, _ = _load_inputs(args.input, None, ckpt.net.input_size)
    y = np.asarray(ckpt.predict(x) if args.labels else ckpt.apply(x))
    classes = ckpt.extra.get("classes")
    if args.labels and classes is not None:  # csv string labels: back to the names trained on
        y = np.asarray(classes)[y]
    if out is not None:
        buf = io.BytesIO()
        np.save(buf, y, allow_pickle=False)
        _files.atomic_write(out, lambda f: f.write(buf.getvalue()))  # exactly this path: no ".npy" added
        print(f"wrote {y.shape} to {out}")
    else:
        fmt = "%s" if y.dtype.kind == "U" else "%d" if args.labels else "%.6g"
        np.savetxt(sys.stdout, y.reshape(y.shape[0], -1), fmt=fmt, delimiter=",")
    return 0


# ------------------------------------------------------------------------ entry point


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the one-line form of every other user error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"funcnn: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
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
    sweep.add_train_flags(p)
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
    p.add_argument("--run-data", action="store_true",
                   help="without --data, for a run trained on files (csv, mnist): read the data.path stored "
                   "in the checkpoint to re-create its test split (never done unless asked)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("predict", help="outputs or predicted labels for new inputs",
                       description="Apply a checkpoint's network (and its stored standardisation) to INPUT.")
    p.add_argument("checkpoint")
    p.add_argument("input", help="rows of features: .npy, .npz (array x) or .csv with a header row "
                   "(required: a first row of numbers is refused, never dropped)")
    p.add_argument("--labels", action="store_true", help="print predicted labels instead of outputs")
    p.add_argument("--out", help="save the result in .npy format to exactly this file instead of printing it")
    p.add_argument("--force", action="store_true", help="let --out replace an existing file")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint",
                       description="Continue RUN_DIR from last.ckpt, with its best-so-far and early-stopping "
                       "count; the result is bit-identical to an uninterrupted run on CPU. A finished run "
                       "(final.ckpt or diverged.ckpt exists) is left unchanged.")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_resume)

    playground.register(sub)
    explain.register(sub)
    mistakes.register(sub)
    sweep.register(sub, set_help, _new_run_dir, _write_text)  # sweep, config
    for p in sub.choices.values():
        p.add_argument("--no-compile-cache", action="store_true",
                       help=f"compile every program afresh instead of reusing those of earlier runs from "
                       f"{compile_cache_dir()} (also: {NO_COMPILE_CACHE_ENV}=1)")
    return ap


def _os_error_line(e: OSError) -> str:
    """One line for an OS error: what failed, on which file, and the system's reason."""
    if e.errno is None or e.strerror is None:  # raised by funcnn with a full message
        return str(e)
    where = f" {e.filename!r}" if e.filename is not None else ""
    hint = {errno.ENOSPC: "; free some space and run again (files already written are intact)",
            errno.EACCES: "; check the permissions", errno.EROFS: "; choose a writable place"}.get(e.errno, "")
    return f"{e.strerror}:{where}{hint}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _use_compile_cache(args.no_compile_cache)
    try:
        return args.fn(args)
    except BrokenPipeError:  # e.g. `funcnn evaluate ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except UserError as e:
        print(f"funcnn: error: {e}", file=sys.stderr)
        return e.code
    except FuncnnError as e:  # funcnn's own user errors; any other exception is a bug: its traceback shows
        print(f"funcnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the OS refused: a missing file, a full disk, a read-only directory, ...
        print(f"funcnn: error: {_os_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # outside training (which names its epoch)
        print("funcnn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
