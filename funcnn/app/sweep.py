"""Several models at once from the CLI: ``train --seeds K``, ``funcnn sweep``, ``funcnn config``.

``funcnn train CONFIG --seeds K`` trains K seeds in one compiled program
(``funcnn.train.fit_many``): the data split is the config's (from
``training.seed``), model i is initialised, shuffled and dropped out with the
training key that ``training.seed = seed + i`` would use. The summary gives
the mean and std over seeds of every test metric; each seed's checkpoint is
written to ``seed-<s>/final.ckpt``.

``funcnn sweep CONFIG --grid KEY=V1,V2 ... [--seeds K]`` trains every
combination. Combinations that differ only in the per-model scalars of
``VMAPPED`` (and the seeds) run as one vmapped program
(``funcnn.train.fit_many``): every optimizer's update is linear in its
learning rate, so ``lr_scales`` give each model its own; the L2 penalty
is added in the train step with each model's own strength (``l2s``); and a
``model.dropout`` rate (one number for every hidden layer) rides on each
step's dropout key (``dropouts``, ``funcnn.layers.DropoutKey``). Any other
difference (a per-layer list of dropout rates, sizes, activations, the
optimizer's other settings, the data) starts another group, trained one
after the other. The
results (one row per combination and seed) are sorted by the
combination's mean final validation loss over seeds, printed and written to ``results.csv``; the best
combination's config is written to ``best.toml``, which ``funcnn train``
accepts.

``funcnn config CONFIG`` prints every key of the resolved config with its
type, default, allowed values and meaning.
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import itertools
import json
import math
import re
import time
import typing
from pathlib import Path

import jax
import numpy as np

from funcnn import activations, checkpoint, initializers, layers, losses, train
from funcnn.app import config as cfglib
from funcnn.app import experiment
from funcnn.errors import InvalidArgument


class SweepError(InvalidArgument):
    """A bad --seeds/--grid request (reported by the CLI in one line)."""


# ----------------------------------------------------------------------------- training K models


def _check_many(cfg) -> None:
    t = cfg.training
    if cfg.optimizer.name == "lbfgs":
        raise SweepError("--seeds/sweep train with fit_many (minibatch optimizers); optimizer.name='lbfgs' "
                         "is one full-batch minimisation: train its seeds one by one with --set training.seed=N.")
    if t.early_stopping is not None:
        raise SweepError("--seeds/sweep train every model for training.epochs epochs; early stopping is per "
                         "model: unset training.early_stopping (--set training.early_stopping=none).")


def train_group(cfgs: list, seeds: int, split=None) -> list[dict]:
    """Trains ``seeds`` seeds of each config in ``cfgs`` (equal but for ``VMAPPED`` keys) in one program.

    Returns one row per (config, seed): ``{"config", "seed", "state", "test", "val_loss"?,
    "val_accuracy"?, "train_loss"}`` (``state`` is that model's ``TrainState``).
    """
    base = cfgs[0]
    _check_many(base)
    split = experiment.load_split(base) if split is None else split
    # One L2 strength (dropout rate) for all: it stays in the network (exactly the single
    # run's program); several: a network without L2 (with dropout at a stand-in rate), and
    # each model's own added in the step (fit_many's l2s and dropouts).
    own_l2 = len({c.model.l2 for c in cfgs}) == 1
    own_dropout = len({c.model.dropout for c in cfgs}) == 1
    run_model = base.model
    if not own_l2:
        run_model = dataclasses.replace(run_model, l2=0.0)
    if not own_dropout:
        run_model = dataclasses.replace(run_model, dropout=layers.STAND_IN_RATE)  # the models' own replace it
    net, opt = experiment.build(dataclasses.replace(base, model=run_model), split.x_train.shape[0])
    lr0 = base.optimizer.learning_rate
    if lr0 <= 0:
        raise SweepError(f"optimizer.learning_rate must be > 0 to sweep; got {lr0}.")
    s0 = base.training.seed
    per_seed = [experiment.keys(dataclasses.replace(base, training=dataclasses.replace(base.training,
                                                                                      seed=s0 + i)))[1]
                for i in range(seeds)]
    keys = jax.numpy.stack(per_seed * len(cfgs))  # [C * K]: config-major
    scales = np.repeat([c.optimizer.learning_rate / lr0 for c in cfgs], seeds)
    l2s = None if own_l2 else np.repeat([c.model.l2 for c in cfgs], seeds)
    dropouts = None if own_dropout else np.repeat([c.model.dropout for c in cfgs], seeds)
    validation = None if split.x_val is None else (split.x_val, experiment.targets(net, split.y_val))
    t = base.training
    states, hist = train.fit_many(net, opt, (split.x_train, experiment.targets(net, split.y_train)), keys=keys,
                                  epochs=t.epochs, batch_size=t.batch_size or split.x_train.shape[0],
                                  lr_scales=scales, l2s=l2s, dropouts=dropouts, validation=validation,
                                  grad=t.grad,
                                  drop_last=t.drop_last,
                                  dtype=experiment.dtype_of(base))
    rows = []
    for j in range(len(keys)):
        c, i = cfgs[j // seeds], j % seeds
        state = jax.tree.map(lambda a, j=j: a[j], states)
        # its own l2 and dropout: the loss it reports, the spec it saves
        own = net if own_l2 and own_dropout else cfglib.build_model(c.model)
        row = {"config": c, "seed": s0 + i, "state": state, "net": own, "split": split,
               "test": experiment.evaluate_split(own, state.params, split.x_test, split.y_test),
               "train_loss": float(hist["train_loss"][-1][j])}
        if validation is not None:
            row["val_loss"] = float(hist["val_loss"][-1][j])
            if net.output.decide is not None:
                row["val_accuracy"] = float(hist["val_accuracy"][-1][j])
        rows.append(row)
    return rows


def scalar_metrics(row: dict) -> dict:
    """The scalar numbers of a row: test metrics (``test_*``), final train/validation losses."""
    out = {f"test_{k}": v for k, v in row["test"].items() if isinstance(v, (int, float))}
    out.update({k: row[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in row})
    return out


def mean_std(rows: list[dict]) -> dict:
    """``{metric: (mean, std)}`` over rows (std with ddof=0; 0 for one row)."""
    keys = scalar_metrics(rows[0])
    return {k: (float(np.mean([scalar_metrics(r)[k] for r in rows])),
                float(np.std([scalar_metrics(r)[k] for r in rows]))) for k in keys}


def _save_row(row: dict, directory: Path) -> Path:
    directory.mkdir(parents=True)
    c = dataclasses.replace(row["config"], training=dataclasses.replace(row["config"].training, seed=row["seed"]))
    split = row["split"]
    extra = {"standardizer": None if split.standardizer is None else
             {"mean": np.asarray(split.standardizer.mean).tolist(), "std": np.asarray(split.standardizer.std).tolist()},
             "test": row["test"], "data_seed": row["config"].training.seed}
    if split.classes is not None:
        extra["classes"] = split.classes
    return checkpoint.save(directory / "final.ckpt", row["state"], spec=row["net"].spec,
                           config=cfglib.config_to_dict(c), extra=extra)


# ----------------------------------------------------------------------------- commands


def cmd_train_seeds(args, new_run_dir, write_text) -> int:
    """``funcnn train CONFIG --seeds K`` (the CLI passes its run-directory and atomic-write helpers)."""
    t0 = time.perf_counter()
    if args.seeds < 1:
        raise SweepError(f"--seeds must be >= 1; got {args.seeds}.")
    cfg = cfglib.load_config(args.config, args.set)
    _check_many(cfg)
    split = experiment.load_split(cfg)
    run_dir = new_run_dir(cfg, args.config, args.out)
    write_text(run_dir / "config.json", json.dumps(cfglib.config_to_dict(cfg), indent=2) + "\n")
    rows = train_group([cfg], args.seeds, split)
    for r in rows:
        _save_row(r, run_dir / f"seed-{r['seed']}")
    stats = mean_std(rows)
    summary = {"seeds": [r["seed"] for r in rows], "mean_std": stats,
               "per_seed": [scalar_metrics(r) for r in rows], "seconds": time.perf_counter() - t0}
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [f"{args.seeds} seeds ({rows[0]['seed']}..{rows[-1]['seed']}) trained at once - run {run_dir}"]
    lines += [f"  {k:<22} {m:.4f} +- {s:.4f}" for k, (m, s) in stats.items()]
    lines.append(f"outputs: {run_dir}/  (config.json, summary.json, seed-<s>/final.ckpt)")
    print("\n".join(lines if not args.quiet else lines[:1] + lines[1:-1]), flush=True)
    return 0


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["optimizer.learning_rate=1e-3,3e-3"]`` -> ``[("optimizer.learning_rate", ["1e-3", "3e-3"])]``."""
    out: list[tuple[str, list[str]]] = []
    for item in items:
        if "=" not in item:
            raise SweepError(f"--grid {item!r} must look like KEY=V1,V2,..., e.g. optimizer.learning_rate=1e-3,3e-3.")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in _split_values(values)]
        if not vals or any(v == "" for v in vals):
            raise SweepError(f"--grid {item!r}: give one or more comma-separated values.")
        if key.strip() in [k for k, _ in out]:
            raise SweepError(f"--grid names {key.strip()!r} twice; give all its values in one --grid.")
        out.append((key.strip(), vals))
    return out


def _split_values(text: str) -> list[str]:
    """Splits at commas outside brackets, so list values (``[64,32]``) stay whole."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


# The per-model scalars one vmapped program can differ in (see the module docstring): (section, key).
# model.dropout only as one number for all layers: a per-layer list starts its own group.
VMAPPED = (("optimizer", "learning_rate"), ("model", "l2"), ("model", "dropout"))


def _group_key(cfg) -> str:
    """Configs with equal keys differ at most in ``VMAPPED`` scalars: one vmapped program."""
    d = cfglib.config_to_dict(cfg)
    for section, key in VMAPPED:
        # (model.dropout means nothing to a model of explicit layers: kept, so such configs never share one)
        if isinstance(d[section][key], (int, float)) and not (key == "dropout" and d["model"]["layers"]):
            d[section][key] = None
    return json.dumps(d, sort_keys=True)


def cmd_sweep(args, new_run_dir, write_text) -> int:
    t0 = time.perf_counter()
    grid = parse_grid(args.grid)
    if not grid:
        raise SweepError("sweep needs at least one --grid KEY=V1,V2,...")
    if args.seeds < 1:
        raise SweepError(f"--seeds must be >= 1; got {args.seeds}.")
    combos = [dict(zip([k for k, _ in grid], vals, strict=True)) for vals in itertools.product(*[v for _, v in grid])]
    cfgs = [cfglib.load_config(args.config, [*args.set, *(f"{k}={v}" for k, v in c.items())]) for c in combos]
    if cfgs[0].data.val_size == 0:
        raise SweepError("sweep ranks on the validation split: set data.val_size, e.g. --set data.val_size=0.15.")
    for c in cfgs:
        _check_many(c)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(_group_key(c), []).append(i)
    run_dir = new_run_dir(cfgs[0], args.config, args.out)
    splits: dict[str, object] = {}
    rows: list[dict] = []
    for idx in groups.values():
        first = cfgs[idx[0]]  # groups with the same data and seed share one split
        data_key = json.dumps(cfglib.config_to_dict(first)["data"], sort_keys=True) + str(first.training.seed)
        if data_key not in splits:
            splits[data_key] = experiment.load_split(cfgs[idx[0]])
        for n, r in enumerate(train_group([cfgs[i] for i in idx], args.seeds, splits[data_key])):
            r["combo"] = combos[idx[n // args.seeds]]  # rows come config-major, seeds inner
            rows.append(r)
    # Rank combinations by their mean final validation loss over seeds (a diverged model ranks last).
    means: dict[int, list] = {}
    for r in rows:
        means.setdefault(id(r["combo"]), []).append(r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf)
    rows.sort(key=lambda r: (float(np.mean(means[id(r["combo"])])), r["seed"]))
    keys = [k for k, _ in grid]
    metric_names = list(scalar_metrics(rows[0]))
    table = [{**{k: r["combo"][k] for k in keys}, "seed": r["seed"],
              **{m: scalar_metrics(r).get(m) for m in metric_names}} for r in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    write_text(run_dir / "results.csv", buf.getvalue())
    best = rows[0]["config"]
    write_text(run_dir / "best.toml", f"# best of {len(combos)} combinations x {args.seeds} seeds "
               "by mean validation loss "
               f"({run_dir / 'results.csv'})\n" + to_toml(best))
    print(format_table(table), flush=True)
    print(f"\n{len(combos)} combinations x {args.seeds} seeds in {len(groups)} compiled group(s), "
          f"{time.perf_counter() - t0:.1f} s - best: " + ", ".join(f"{k}={rows[0]['combo'][k]}" for k in keys)
          + f"\noutputs: {run_dir}/  (results.csv, best.toml: funcnn train {run_dir / 'best.toml'})", flush=True)
    return 0


def format_table(table: list[dict]) -> str:
    cols = list(table[0])
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = [max(len(c), *(len(cell(r[c])) for r in table)) for c in cols]
    lines = ["  ".join(c.rjust(wd) for c, wd in zip(cols, widths, strict=True))]
    lines += ["  ".join(cell(r[c]).rjust(wd) for c, wd in zip(cols, widths, strict=True)) for r in table]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- TOML out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return ("-" if v < 0 else "") + ("inf" if math.isinf(v) else "nan")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def to_toml(cfg) -> str:
    """The config as a TOML file that ``load_config`` reads back to the same config (checked).

    None values are left out: every optional key's default is None.
    """
    d = cfglib.config_to_dict(cfg)
    out = []
    for section, values in d.items():
        out.append(f"\n[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    text = "\n".join(out).lstrip() + "\n"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    back = cfglib.config_from_dict(tomllib.loads(text))
    if back != cfg:  # pragma: no cover - an internal invariant
        raise AssertionError("to_toml did not round-trip the config")
    return text


# ----------------------------------------------------------------------------- funcnn config


def _allowed() -> dict[str, str]:
    """Allowed values of the keys that take names: each from its one table."""
    return {
        "model.hidden": ", ".join(sorted(activations.HIDDEN)) + " (or one per hidden layer)",
        "model.output": ", ".join(activations.OUTPUT),
        "model.loss": ", ".join(losses.LOSSES),
        "model.init": ", ".join(initializers.NAMES),
        "model.bias_init": ", ".join(layers.BIAS_INITS),
        "model.precision": ", ".join(layers.PRECISIONS),
        "optimizer.name": ", ".join(cfglib.OPTIMIZERS),
        "optimizer.schedule": ", ".join(cfglib.SCHEDULES),
        "training.grad": ", ".join(train.GRADS),
        "training.dtype": ", ".join(cfglib.DTYPES),
        "data.name": ", ".join(cfglib.DATASETS),
    }


def _comments(cls) -> dict[str, str]:
    """Each field's trailing ``# comment`` in the dataclass source: the key's meaning, stated once."""
    found = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):[^#]*#\s*(.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def _type_name(hint) -> str:
    return re.sub(r"typing\.|<class '(\w+)'>", r"\1", str(hint)).replace("NoneType", "None")


def describe_config(cfg) -> str:
    """Every key: ``section.key = value   type   default   allowed   meaning``."""
    allowed, lines, default = _allowed(), [], cfglib.Config()
    for section, cls in cfglib.SECTIONS.items():
        hints, notes = typing.get_type_hints(cls), _comments(cls)
        lines.append(f"[{section}]")
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            value, dflt = getattr(getattr(cfg, section), f.name), getattr(getattr(default, section), f.name)
            lines.append(f"  {f.name} = {json.dumps(value)}" + ("" if value == dflt else "   (changed)"))
            lines.append(f"      type {_type_name(hints[f.name])}; default {json.dumps(dflt)}"
                         + (f"; allowed: {allowed[key]}" if key in allowed else ""))
            if f.name in notes:
                lines.append(f"      {notes[f.name]}")
    return "\n".join(lines)


def cmd_config(args) -> int:
    cfg = cfglib.load_config(args.config, args.set)
    print(describe_config(cfg) if not args.toml else to_toml(cfg), end="\n" if not args.toml else "")
    return 0


# ----------------------------------------------------------------------------- the CLI's registration


def add_train_flags(p) -> None:
    """``--seeds`` on ``funcnn train``."""
    p.add_argument("--seeds", type=int, metavar="K", help="train K seeds at once (fit_many): mean and std of "
                   "every metric in the summary, each seed's checkpoint in seed-<s>/")


def register(sub, set_help: str, new_run_dir, write_text) -> None:
    """Adds ``sweep`` and ``config`` to the CLI's subparsers."""
    p = sub.add_parser("sweep", help="train every combination of a grid (vmapped where only lr/l2/seed differ)",
                       description="Train every combination of the --grid values (and --seeds seeds of each); "
                       "rank them by final validation loss; write results.csv and best.toml.")
    p.add_argument("config")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values, e.g. optimizer.learning_rate=1e-3,3e-3 (repeatable)")
    p.add_argument("--seeds", type=int, default=1, metavar="K", help="seeds per combination (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", help="the sweep directory to create (must not exist)")
    p.set_defaults(fn=lambda a: cmd_sweep(a, new_run_dir, write_text))

    p = sub.add_parser("config", help="print the resolved config: every key, type, default, allowed values",
                       description="Print CONFIG (with --set overrides) fully resolved: every key with its "
                       "value, type, default, allowed values and meaning. --toml prints it as a TOML file.")
    p.add_argument("config", nargs="?", default=None, help="a TOML config (default: the built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--toml", action="store_true", help="print the resolved config as TOML instead")
    p.set_defaults(fn=cmd_config)


__all__ = ["SweepError", "VMAPPED", "train_group", "mean_std", "scalar_metrics", "parse_grid", "to_toml",
           "describe_config", "register", "add_train_flags", "cmd_train_seeds", "cmd_sweep", "cmd_config"]
