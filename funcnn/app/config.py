"""Run configuration: typed frozen dataclasses, a TOML file, then ``section.key=value`` overrides.

Precedence, stated once (STYLE habit 11)::

    dataclass defaults  <  the TOML file  <  overrides ("model.sizes=[64,32,10]")

Every value is type-checked and range-checked, and every name is checked
against what funcnn accepts, BEFORE any work is done; an unknown section or
key is an error that suggests the closest one. The defaults are the digits
main job. ``config_to_dict`` gives the resolved config as a plain dict (save
it beside the results); ``config_from_dict`` reads it back with the same
checks.

A config file has one table per section::

    [model]
    sizes = [64, 256, 10]
    hidden = "relu"

    [optimizer]
    name = "adam"
    learning_rate = 3e-3
    schedule = "cosine"

Optional values (``clip_norm``, ``early_stopping``, ``data.path``, ...) are
left out of the file for None (TOML has no null); in an override write
``none``. ``optimizer.name = "lbfgs"`` is a full-batch minimiser, not a
``GradientTransformation``: ``build_optimizer`` refuses it and the CLI runs
``funcnn.optim.lbfgs_minimize`` itself (with ``training.batch_size = 0``);
``optimizer.name = "hessian_free"`` likewise runs ``funcnn.optim.hessian_free``
(Gauss-Newton products of the network, ``max_iters``, ``cg_iters``, ``damping``).

Everything raises ``ConfigError``, a ``ValueError`` whose ``key`` attribute is
the offending ``"section.key"`` (or None).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport, a declared dependency there
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np

from funcnn import _checks, activations, initializers, layers, losses, optim
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.mlp import BIAS_INITS, PRECISIONS, mlp
from funcnn.network import Network, network
from funcnn.optim import GradientTransformation
from funcnn.train import GRADS

__all__ = [
    "Config", "ModelConfig", "OptimizerConfig", "TrainingConfig", "DataConfig", "OutputConfig",
    "ConfigError", "OPTIMIZERS", "SCHEDULES", "DATASETS", "DTYPES",
    "load_config", "config_to_dict", "config_from_dict", "build_optimizer", "build_model",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs", "hessian_free")
# Full-batch minimisers: one compiled minimisation each, not a GradientTransformation.
FULL_BATCH = ("lbfgs", "hessian_free")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "step")
DATASETS = ("digits", "two_lines", "sine", "xor", "moons", "spirals", "mnist", "csv")
DTYPES = ("float32", "float64")
# Input width of each built-in data set, and output width where it is fixed.
# Checked against model.sizes so a mismatch fails before the data is loaded.
_INPUTS = {"digits": 64, "mnist": 784, "two_lines": 2, "xor": 2, "moons": 2, "spirals": 2, "sine": 1}
_OUTPUTS = {"digits": 10, "mnist": 10, "sine": 1}


_MAX_CONFIG_BYTES = 1 << 20


class ConfigError(InvalidArgument):
    """A bad configuration value; ``key`` is the ``"section.key"`` concerned (or None)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelConfig:
    """The network; see ``funcnn.mlp``. Defaults: the digits main job (being tuned)."""

    sizes: tuple[int, ...] = (64, 256, 10)  # layer widths, input first; with layers: [input, output]
    hidden: str | tuple[str, ...] = "relu"  # funcnn.activations.HIDDEN, or one name per hidden layer
    output: str = "softmax"  # identity, sigmoid or softmax
    loss: str = "cross_entropy"  # must suit output: see funcnn.losses.PAIRS
    l2: float = 0.0  # lambda of the lambda/(2n) * sum W^2 penalty; biases excluded
    init: str = "xavier_normal"  # funcnn.initializers.NAMES
    init_epsilon: float = 0.12  # half-width of U(-eps, eps) for init="uniform"; unused otherwise
    bias_init: str = "zeros"  # zeros, or "same": drawn like the weights (the classic course)
    dropout: float | tuple[float, ...] = 0.0  # probability of DROPPING a hidden unit, in [0, 1), or one per layer
    precision: str = "default"  # "bfloat16": bf16 matmuls, float32 accumulation (GPU/TPU)
    # Any network instead of an MLP: a list of layer tables, each a funcnn.layers
    # spec, e.g. [{name = "dense", width = 128, activation = "relu"},
    # {name = "layer_norm"}, {name = "residual", inner = [{name = "dense", width = 128,
    # activation = "tanh"}]}, {name = "dense", width = 10}]. Then sizes is
    # [input width, output width] and hidden, dropout, init, bias_init, precision
    # are the layers' own business.
    layers: tuple[dict, ...] = ()


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer and its learning-rate schedule; see ``funcnn.optim``."""

    name: str = "adam"  # sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lbfgs, hessian_free
    learning_rate: float = 1e-3  # the base (peak) rate; unused by lbfgs (line search)
    # Schedules run over the whole run (total_steps = epochs * steps per epoch):
    #   constant       lr
    #   cosine         lr -> lr * final_lr_fraction, cosine-shaped
    #   warmup_cosine  0 -> lr linearly over warmup_steps, then cosine as above
    #   exponential    lr * decay_rate ** (t / decay_steps)
    #   step           lr * decay_rate ** floor(t / decay_steps)
    schedule: str = "constant"
    warmup_steps: int = 0  # warmup_cosine only; must be < total steps
    decay_rate: float = 0.1  # exponential, step: factor per decay_steps
    decay_steps: int = 0  # exponential, step; 0 = the whole run (step needs it > 0)
    final_lr_fraction: float = 0.0  # cosine schedules end at learning_rate * this
    b1: float = 0.9  # adam(w): first-moment decay
    b2: float = 0.999  # adam(w): second-moment decay
    eps: float = 1e-8  # adam(w), rmsprop, adagrad: denominator guard (outside the sqrt)
    beta: float = 0.9  # momentum, nesterov: the momentum coefficient
    rms_decay: float = 0.9  # rmsprop: decay of the running mean of g**2
    weight_decay: float = 0.0  # adamw only (decoupled); for the others use model.l2
    clip_norm: float | None = None  # clip the global gradient norm to this; None or 0 = off
    max_iters: int = 200  # lbfgs, hessian_free: outer iterations
    history: int = 10  # lbfgs: (s, y) pairs kept
    cg_iters: int = 50  # hessian_free: the most CG iterations (Gauss-Newton products) per outer iteration
    damping: float = 1.0  # hessian_free: initial Levenberg-Marquardt lambda, adapted by the reduction ratio


@dataclass(frozen=True)
class TrainingConfig:
    """The training loop; see ``funcnn.train.fit``."""

    epochs: int = 60  # passes over the training set (unused by lbfgs: see max_iters)
    batch_size: int = 32  # samples per step; 0 = full batch (required by lbfgs)
    seed: int = 0  # the one seed: jax.random.key(seed) drives splits, init, shuffles, dropout
    grad: str = "manual"  # manual (hand-derived backprop) or autodiff (jax.grad)
    dtype: str = "float32"  # float32 or float64 (float64 needs jax_enable_x64)
    drop_last: bool = False  # skip each epoch's last partial batch
    early_stopping: int | None = None  # patience in epochs; needs data.val_size > 0


@dataclass(frozen=True)
class DataConfig:
    """The data set and its split; see ``funcnn.data``."""

    name: str = "digits"  # digits, two_lines, sine, xor, moons, spirals, mnist, csv
    path: str | None = None  # mnist: directory of the 4 IDX files; csv: the file
    target: str | tuple[str, ...] | None = None  # csv: the target column's name, or several (regression)
    test_size: float = 0.3  # fraction held out for the test set (mnist: t10k is the test set)
    val_size: float = 0.0  # fraction held out for validation; 0 = no validation split
    stratify: bool = True  # keep class proportions in every split (classification only)
    standardize: bool = False  # zero mean, unit variance per feature, fitted on the train split
    augment: bool = False  # digits/mnist: add 1-pixel shifted copies of the training images (5x data)
    n_samples: int = 1000  # generated sets: number of points
    noise: float | None = None  # generated sets: noise std; None = the generator's default


@dataclass(frozen=True)
class OutputConfig:
    """Where results go and what is produced beside the metrics."""

    dir: str = "runs"  # results directory (the resolved config is saved there too)
    plots: bool = True  # write loss curves / decision boundary plots
    gradcheck: bool = True  # run funcnn.gradcheck on the initial network before training


@dataclass(frozen=True)
class Config:
    """The whole run: one frozen value; change it with ``dataclasses.replace``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)  # section name -> its dataclass
_ALL_KEYS = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


# ------------------------------------------------------------------------ public API


def load_config(path=None, overrides=()) -> Config:
    """Loads a config: defaults, then the TOML file at ``path``, then ``overrides``.

    Args:
      path: a TOML file (``str`` or ``os.PathLike``), or None for defaults only.
      overrides: strings ``"section.key=value"``. ``value`` is read as a TOML
        value when it parses as one (``[64, 32, 10]``, ``3e-3``, ``true``,
        ``"x"``), else taken as a bare string (``tanh``, ``data/mnist``); for a
        string field the raw text is always used; ``none`` sets an optional
        field to None.

    Returns:
      The validated, frozen ``Config``.

    Raises:
      FileNotFoundError: no file at ``path``.
      ConfigError (a ValueError): malformed TOML (with its line), an unknown
        section or key (suggesting the closest), a malformed override, a value
        of the wrong type, out of range, or not an allowed name; the message
        names the key, the value and what is allowed, and where it was set.
    """
    merged: dict[str, dict] = {}
    origins: dict[str, str] = {}
    if path is not None:
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"no config file at {name!r}.")
        try:
            with open(name, "rb") as f:
                raw = f.read(_MAX_CONFIG_BYTES + 1)
        except OSError as e:  # e.g. /proc/self/mem: the CLI reports it in one line, with the file
            raise OSError(e.errno, e.strerror, name) from None
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {name!r} is larger than {_MAX_CONFIG_BYTES >> 20} MiB; a config "
                              "is a few lines of TOML.")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {name!r} is not UTF-8 text (undecodable byte at offset {e.start}); "
                              "TOML files are UTF-8.") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {name!r} is not valid TOML: {e}.") from None
        for section, table in data.items():
            _section(section, f"in {name!r}")
            if not isinstance(table, dict):
                raise ConfigError(f"config file {name!r}: {section!r} must be a table "
                                  f"[{section}] of keys; got {table!r}.", section)
            for key, value in table.items():
                full = _key(section, key, f"in {name!r}")
                merged.setdefault(section, {})[key] = value
                origins[full] = f"config file {name!r}"
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'section.key=value' strings; got the "
                          f"single string {overrides!r} (wrap it in a list).")
    for item in overrides:
        section, key, value = _parse_override(item)
        merged.setdefault(section, {})[key] = value
        origins[f"{section}.{key}"] = f"override {item!r}"
    try:
        return config_from_dict(merged)
    except ConfigError as e:
        if e.key in origins:
            raise ConfigError(f"{str(e).rstrip('.')} (set by {origins[e.key]}).", e.key) from None
        raise


def config_to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts, ready for ``json.dump`` or a TOML writer.

    Tuples become lists; None values are left out (TOML has no null; every
    optional field defaults to None, so ``config_from_dict`` restores them).

    Args:
      cfg: a ``Config``.

    Returns:
      ``{"model": {...}, "optimizer": {...}, "training": {...}, "data": {...},
      "output": {...}}``.

    Raises:
      TypeError: ``cfg`` is not a ``Config``.
    """
    if not isinstance(cfg, Config):
        raise InvalidType(f"cfg must be a Config; got {type(cfg).__name__}.")
    out = {}
    for section in SECTIONS:
        values = dataclasses.asdict(getattr(cfg, section))
        out[section] = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in values.items() if v is not None}
    return out


def config_from_dict(d: dict) -> Config:
    """Builds and validates a ``Config`` from nested dicts; missing keys keep their defaults.

    Args:
      d: ``{section: {key: value}}``, e.g. from ``config_to_dict`` or a
        parsed TOML file.

    Returns:
      The validated, frozen ``Config``.

    Raises:
      ConfigError (a ValueError): unknown section or key, wrong type, out of
        range, unknown name, or an inconsistent combination (see ``load_config``).
    """
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a dict of sections; got {type(d).__name__}.")
    for section in d:
        _section(section, "")
    sections = {}
    for section, cls in SECTIONS.items():
        table = d.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config section {section!r} must be a dict of keys; got {table!r}.",
                              section)
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in table.items():
            full = _key(section, key, "")
            kwargs[key] = _typed(full, value, hints[key])
        sections[section] = cls(**kwargs)
    cfg = Config(**sections)
    _validate(cfg)
    return cfg


def build_model(cfg: ModelConfig) -> Network:
    """The network a ``ModelConfig`` describes (``cfg.model`` of a ``Config``).

    Args:
      cfg: a ``ModelConfig`` (a whole ``Config`` is accepted too).

    Returns:
      The network: an ``MLP`` from sizes/hidden/..., or ``funcnn.network``
      of ``layers`` (cached by funcnn: equal configs give the same object).

    Raises:
      TypeError: ``cfg`` is not a ``ModelConfig`` or ``Config``.
      ConfigError: the library rejects the combination (e.g. loss and output
        do not fit); the message is the library's, prefixed with the key.
    """
    cfg = cfg.model if isinstance(cfg, Config) else cfg
    if not isinstance(cfg, ModelConfig):
        raise InvalidType(f"cfg must be a ModelConfig; got {type(cfg).__name__}.")
    if cfg.layers:
        return _build_network(cfg)
    init = initializers.uniform(cfg.init_epsilon) if cfg.init == "uniform" else cfg.init
    try:
        return mlp(cfg.sizes, hidden=cfg.hidden, output=cfg.output, loss=cfg.loss, l2=cfg.l2,
                   init=init, bias_init=cfg.bias_init, dropout=cfg.dropout, precision=cfg.precision)
    except (TypeError, ValueError) as e:
        # All names were checked one by one, so what is left is a combination
        # the library rejects, e.g. an (output, loss) pair: keep its message.
        raise ConfigError(f"model.output={cfg.output!r} with model.loss={cfg.loss!r}: {e}") from None


def _build_network(cfg: ModelConfig) -> Network:
    if len(cfg.sizes) != 2:
        raise ConfigError(f"with model.layers, model.sizes must be [input width, output width]; got "
                          f"{list(cfg.sizes)}.", "model.sizes")
    stack = []
    for i, table in enumerate(cfg.layers):
        try:
            stack.append(layers.from_spec(table))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.layers[{i}]: {e}", "model.layers") from None
    try:
        net = network(stack, input_size=cfg.sizes[0], output=cfg.output, loss=cfg.loss, l2=cfg.l2)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.layers: {e}", "model.layers") from None
    if net.output_size != cfg.sizes[-1]:
        raise ConfigError(f"model.layers end with width {net.output_size}, but model.sizes says the output is "
                          f"{cfg.sizes[-1]} wide.", "model.layers")
    return net


def build_optimizer(cfg: OptimizerConfig, total_steps: int) -> GradientTransformation:
    """The optimizer an ``OptimizerConfig`` describes, its schedule spanning ``total_steps``.

    ``clip_norm`` (if set and > 0) puts ``clip_by_global_norm(clip_norm)``
    first: ``chain(clip_by_global_norm(c), optimizer)``. Schedules are
    evaluated at the update count (0 on the first update); see
    ``OptimizerConfig`` for their formulas.

    Args:
      cfg: an ``OptimizerConfig`` (a whole ``Config`` is accepted too).
      total_steps: optimizer steps in the whole run, a positive int
        (``epochs * funcnn.train.steps_per_epoch(n, batch_size)``).

    Returns:
      A ``GradientTransformation``.

    Raises:
      TypeError: ``cfg`` is not an ``OptimizerConfig`` or ``Config``.
      ConfigError: ``name == "lbfgs"`` (a full-batch minimiser, not a
        GradientTransformation: use ``funcnn.optim.lbfgs_minimize`` with
        ``max_iters`` and ``history``), a non-positive ``total_steps``, or
        ``warmup_steps >= total_steps``.
    """
    cfg = cfg.optimizer if isinstance(cfg, Config) else cfg
    if not isinstance(cfg, OptimizerConfig):
        raise InvalidType(f"cfg must be an OptimizerConfig; got {type(cfg).__name__}.")
    if cfg.name == "lbfgs":
        raise ConfigError(
            "optimizer.name='lbfgs' is a full-batch minimiser, not a GradientTransformation: "
            "run it with funcnn.optim.lbfgs_minimize(value_and_grad, params, "
            f"max_iters={cfg.max_iters}, history={cfg.history}) (the CLI does this).",
            "optimizer.name")
    if cfg.name == "hessian_free":
        raise ConfigError(
            "optimizer.name='hessian_free' is a full-batch minimiser, not a GradientTransformation: "
            "run it with funcnn.optim.hessian_free(value_and_grad, gnvp, params, "
            f"max_iters={cfg.max_iters}, max_cg_iters={cfg.cg_iters}, damping={cfg.damping}) "
            "(the CLI does this).", "optimizer.name")
    try:
        total_steps = _checks.positive_int("total_steps", total_steps)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    peak = cfg.learning_rate
    lr: float | optim.Schedule = peak
    if cfg.schedule == "cosine":
        lr = optim.cosine_decay_schedule(peak, total_steps, alpha=cfg.final_lr_fraction)
    elif cfg.schedule == "warmup_cosine":
        if cfg.warmup_steps >= total_steps:
            raise ConfigError(f"optimizer.warmup_steps={cfg.warmup_steps} must be less than the "
                              f"run's {total_steps} total steps.", "optimizer.warmup_steps")
        lr = optim.warmup_cosine_decay_schedule(0.0, peak, cfg.warmup_steps, total_steps,
                                                end_value=peak * cfg.final_lr_fraction)
    elif cfg.schedule == "exponential":
        lr = optim.exponential_decay(peak, cfg.decay_rate, cfg.decay_steps or total_steps)
    elif cfg.schedule == "step":
        lr = optim.step_decay_schedule(peak, cfg.decay_rate, cfg.decay_steps)
    opt = {
        "sgd": lambda: optim.sgd(lr),
        "momentum": lambda: optim.momentum(lr, cfg.beta),
        "nesterov": lambda: optim.nesterov(lr, cfg.beta),
        "adagrad": lambda: optim.adagrad(lr, eps=cfg.eps),
        "rmsprop": lambda: optim.rmsprop(lr, cfg.rms_decay, cfg.eps),
        "adam": lambda: optim.adam(lr, cfg.b1, cfg.b2, cfg.eps),
        "adamw": lambda: optim.adamw(lr, cfg.b1, cfg.b2, cfg.eps, cfg.weight_decay),
    }[cfg.name]()
    if cfg.clip_norm:
        opt = optim.chain(optim.clip_by_global_norm(cfg.clip_norm), opt)
    return opt


# ------------------------------------------------------------------------ internals


def _suggest(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def _section(section: str, where: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"Unknown config section {section!r}{' ' + where if where else ''}"
                          f"{_suggest(section, SECTIONS)} Sections are {list(SECTIONS)}.", section)


def _key(section: str, key: str, where: str) -> str:
    _section(section, where)
    full = f"{section}.{key}"
    if full not in _ALL_KEYS:
        raise ConfigError(f"Unknown config key {full!r}{' ' + where if where else ''}"
                          f"{_suggest(full, _ALL_KEYS)}", full)
    return full


def _parse_override(item) -> tuple[str, str, object]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r} must look like 'section.key=value', "
                          "e.g. 'optimizer.learning_rate=3e-3'.")
    lhs, text = item.split("=", 1)
    lhs, text = lhs.strip(), text.strip()
    if lhs.count(".") != 1:
        raise ConfigError(f"override {item!r}: {lhs!r} must be 'section.key' with one dot, "
                          f"e.g. 'model.hidden'; sections are {list(SECTIONS)}.")
    section, key = lhs.split(".")
    _key(section, key, f"(override {item!r})")
    hint = typing.get_type_hints(SECTIONS[section])[key]
    if _optional(hint):
        if text.lower() in ("none", "null"):
            return section, key, None
        rest = tuple(a for a in typing.get_args(hint) if a is not type(None))
        hint = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - built at run time; str | tuple[str, ...] | None: both stay
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint):
        try:  # a list of names if it parses as one, else one bare name
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        return section, key, value if isinstance(value, list) else text
    if hint is str:  # a string field takes the raw text: data.target=1 is the column "1"
        quoted = len(text) > 1 and text[0] == text[-1] and text[0] in "\"'"
        return section, key, text[1:-1] if quoted else text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word; the type check says if it does not fit the field
    return section, key, value


def _optional(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _typed(key: str, value, hint):
    """Checks ``value`` against the field's type; ints pass for floats, bools never for numbers."""
    if _optional(hint):
        if value is None:
            return None
        rest = tuple(a for a in typing.get_args(hint) if a is not type(None))
        hint = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - built at run time; str | tuple[str, ...] | None: both stay
    if hint is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, want = isinstance(value, (int, np.integer)) and not isinstance(value, bool), "an integer"
    elif hint is float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        want = "a number"
        if ok:
            value = float(value)
    elif hint is str:
        ok, want = isinstance(value, str), "a string"
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):  # one value, or one per layer
        single, many = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return _typed(key, value, many)
        return _typed(key, value, single)
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is dict:  # tuple[dict, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, dict) for v in value)
        want = 'a list of tables, e.g. [{name = "dense", width = 128, activation = "relu"}]'
        if ok:
            value = tuple(_plain(v) for v in value)
    elif typing.get_origin(hint) is tuple:  # tuple[int, ...], tuple[str, ...], tuple[float, ...]
        elem = typing.get_args(hint)[0]
        ok = isinstance(value, (list, tuple)) and all(_is(v, elem) for v in value)
        want = {int: "a list of integers, e.g. [64, 256, 10]", str: 'a list of names, e.g. ["relu", "tanh"]',
                float: "a list of numbers, e.g. [0.1, 0.2]"}[elem]
        if ok:
            value = tuple(elem(v) for v in value)
    else:  # pragma: no cover - every field type is listed above
        raise AssertionError(f"unhandled config type {hint!r} for {key}")
    if not ok:
        raise ConfigError(f"{key} must be {want}; got {value!r} ({type(value).__name__}).", key)
    return int(value) if hint is int else value


def _is(v, elem) -> bool:
    if isinstance(v, bool):
        return False
    if elem is float:
        return isinstance(v, (int, float, np.integer, np.floating))
    if elem is int:
        return isinstance(v, (int, np.integer))
    return isinstance(v, elem)


def _plain(d):
    """A TOML table as plain dicts and lists (for layer specs)."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


def _fail(key: str, value, allowed: str):
    raise ConfigError(f"{key} must be {allowed}; got {value!r}.", key)


def _number(key: str, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    try:
        _checks.number(key, value, low=low, high=high, low_open=low_open, high_open=high_open)
    except ValueError as e:
        raise ConfigError(str(e), key) from None


def _choice(key: str, value, allowed) -> None:
    try:
        _checks.choice(key, value, allowed)
    except ValueError as e:
        raise ConfigError(str(e), key) from None


def _validate(cfg: Config) -> None:
    """Checks every field of ``cfg``, section by section; raises ConfigError naming the key."""
    _validate_model(cfg.model)
    _validate_optimizer(cfg.optimizer, cfg.training)
    _validate_training(cfg.training, cfg.data)
    _validate_data(cfg.data, cfg.model)
    _validate_output(cfg.output)


def _validate_model(m: ModelConfig) -> None:
    """[model]: names from the library's tables, numbers in range, then the library's own checks."""
    if len(m.sizes) < 2 or any(s <= 0 for s in m.sizes):
        _fail("model.sizes", list(m.sizes), "at least two positive layer widths, input first, "
              "e.g. [64, 256, 10]")
    for h in (m.hidden,) if isinstance(m.hidden, str) else m.hidden:
        _choice("model.hidden", h, activations.HIDDEN)
    _choice("model.output", m.output, activations.OUTPUT)
    _choice("model.loss", m.loss, losses.PAIRS)
    _choice("model.init", m.init, initializers.NAMES)
    _choice("model.bias_init", m.bias_init, BIAS_INITS)
    _number("model.l2", m.l2, low=0)
    _number("model.init_epsilon", m.init_epsilon, low=0, low_open=True)
    for r in (m.dropout,) if isinstance(m.dropout, float) else m.dropout:
        _number("model.dropout", r, low=0, high=1, high_open=True)
    _choice("model.precision", m.precision, PRECISIONS)
    build_model(m)  # the library's own checks, e.g. (output, loss) pairs


def _validate_optimizer(o: OptimizerConfig, t: TrainingConfig) -> None:
    """[optimizer]: numbers in range; settings used only by some optimizers or schedules given only with them."""
    _choice("optimizer.name", o.name, OPTIMIZERS)
    _choice("optimizer.schedule", o.schedule, SCHEDULES)
    _number("optimizer.learning_rate", o.learning_rate, low=0, low_open=True)
    if o.warmup_steps < 0:
        _fail("optimizer.warmup_steps", o.warmup_steps, "an integer >= 0")
    if o.warmup_steps and o.schedule != "warmup_cosine":
        raise ConfigError(f"optimizer.warmup_steps={o.warmup_steps} is only used by "
                          f"schedule='warmup_cosine'; got schedule={o.schedule!r}.",
                          "optimizer.warmup_steps")
    _number("optimizer.decay_rate", o.decay_rate, low=0, low_open=True)
    if o.decay_steps < 0:
        _fail("optimizer.decay_steps", o.decay_steps, "an integer >= 0 (0 = the whole run)")
    if o.schedule == "step" and o.decay_steps == 0:
        raise ConfigError("optimizer.schedule='step' needs optimizer.decay_steps > 0, the steps "
                          "between drops of the learning rate.", "optimizer.decay_steps")
    _number("optimizer.final_lr_fraction", o.final_lr_fraction, low=0, high=1)
    for k in ("b1", "b2", "beta", "rms_decay"):
        _number(f"optimizer.{k}", getattr(o, k), low=0, high=1, high_open=True)
    _number("optimizer.eps", o.eps, low=0)
    _number("optimizer.weight_decay", o.weight_decay, low=0)
    if o.weight_decay and o.name != "adamw":
        raise ConfigError(f"optimizer.weight_decay={o.weight_decay} is only used by adamw; got "
                          f"name={o.name!r}. For an L2 penalty with other optimizers set model.l2.",
                          "optimizer.weight_decay")
    if o.clip_norm is not None:
        _number("optimizer.clip_norm", o.clip_norm, low=0)
    for k in ("max_iters", "history", "cg_iters"):
        if getattr(o, k) <= 0:
            _fail(f"optimizer.{k}", getattr(o, k), "a positive integer")
    if not o.damping > 0:
        _fail("optimizer.damping", o.damping, "a number > 0")
    if o.name in FULL_BATCH:
        how = "by line search" if o.name == "lbfgs" else "by damped Gauss-Newton steps"
        if o.schedule != "constant" or o.clip_norm:
            raise ConfigError(f"optimizer.name={o.name!r} chooses its own step {how}: "
                              "leave optimizer.schedule='constant' and optimizer.clip_norm unset.",
                              "optimizer.schedule" if o.schedule != "constant" else "optimizer.clip_norm")
        if t.batch_size != 0:
            raise ConfigError(f"optimizer.name={o.name!r} is full-batch: set training.batch_size = 0; "
                              f"got {t.batch_size}.", "training.batch_size")


def _validate_training(t: TrainingConfig, d: DataConfig) -> None:
    """[training]; early stopping needs a validation split."""
    if t.epochs <= 0:
        _fail("training.epochs", t.epochs, "a positive integer")
    if t.batch_size < 0:
        _fail("training.batch_size", t.batch_size, "a positive integer, or 0 for full batch")
    _choice("training.grad", t.grad, GRADS)
    _choice("training.dtype", t.dtype, DTYPES)
    if t.early_stopping is not None:
        if t.early_stopping <= 0:
            _fail("training.early_stopping", t.early_stopping, "a positive patience in epochs, or none")
        if d.val_size == 0:
            raise ConfigError("training.early_stopping needs a validation split: set "
                              "data.val_size > 0 (e.g. 0.15).", "training.early_stopping")


def _validate_data(d: DataConfig, m: ModelConfig) -> None:
    """[data]: the data set's own keys, and its input/output widths against model.sizes."""
    _choice("data.name", d.name, DATASETS)
    _number("data.test_size", d.test_size, low=0, high=1, low_open=True, high_open=True)
    _number("data.val_size", d.val_size, low=0, high=1, high_open=True)
    if d.test_size + d.val_size >= 1:
        raise ConfigError(f"data.test_size + data.val_size must be < 1 to leave training data; "
                          f"got {d.test_size} + {d.val_size}.", "data.val_size")
    if d.n_samples <= 0:
        _fail("data.n_samples", d.n_samples, "a positive integer")
    if d.noise is not None:
        _number("data.noise", d.noise, low=0)
    if d.name in ("mnist", "csv") and not d.path:
        what = "directory holding the four MNIST IDX files" if d.name == "mnist" else "CSV file"
        raise ConfigError(f"data.name={d.name!r} needs data.path, the {what}.", "data.path")
    if d.path is not None and d.name not in ("mnist", "csv"):
        raise ConfigError(f"data.path is only used by mnist and csv; got data.name={d.name!r}.",
                          "data.path")
    if d.name == "csv" and not d.target:
        raise ConfigError("data.name='csv' needs data.target, the target column's name.",
                          "data.target")
    if d.target is not None and d.name != "csv":
        raise ConfigError(f"data.target is only used by csv; got data.name={d.name!r}.", "data.target")
    if d.augment and d.name not in ("digits", "mnist"):
        raise ConfigError(f"data.augment shifts images, so it needs data.name digits or mnist; got "
                          f"{d.name!r}.", "data.augment")
    if d.name == "sine" and d.stratify:
        raise ConfigError("data.stratify=true needs class labels, but sine is a regression set: "
                          "set data.stratify = false.", "data.stratify")
    if d.name in _INPUTS and m.sizes[0] != _INPUTS[d.name]:
        raise ConfigError(f"model.sizes starts with {m.sizes[0]}, but data.name={d.name!r} has "
                          f"{_INPUTS[d.name]} input features: set model.sizes[0] = {_INPUTS[d.name]}.",
                          "model.sizes")
    if d.name in _OUTPUTS and m.sizes[-1] != _OUTPUTS[d.name]:
        raise ConfigError(f"model.sizes ends with {m.sizes[-1]}, but data.name={d.name!r} needs "
                          f"{_OUTPUTS[d.name]} outputs: set model.sizes[-1] = {_OUTPUTS[d.name]}.",
                          "model.sizes")


def _validate_output(out: OutputConfig) -> None:
    """[output]."""
    if not out.dir.strip():
        _fail("output.dir", out.dir, "a non-empty directory name")
