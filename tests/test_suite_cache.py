"""The suite's compilation cache (tests/conftest.py) changes no result.

Programs loaded from JAX's persistent cache must compute what freshly compiled
ones compute, bit for bit: a short ``fit`` in three fresh processes, one with
the cache off, one that compiles into an empty cache and one that loads every
program from it, gives the same parameter digest in all three.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIT = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import conftest  # the suite's settings, the cache among them
import jax, numpy as np
import funcnn
from funcnn import data, optim, train

events = []  # JAX's persistent-cache events: cache_hits, cache_misses
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event.rsplit("/", 1)[-1]))
x, y = data.load_digits()
net = funcnn.mlp([64, 32, 10], hidden="tanh", l2=0.1)
state, history = train.fit(net, optim.adam(1e-2), (x[:300], y[:300]), epochs=2, batch_size=32,
                           key=jax.random.key(0))
h = hashlib.sha256()
for leaf in jax.tree.leaves(state.params):
    h.update(np.asarray(leaf).tobytes())
print(h.hexdigest(), events.count("cache_hits"), events.count("cache_misses"))
"""


def _fit(cache) -> tuple[str, int, int]:
    env = dict(os.environ, FUNCNN_TEST_JAX_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", FIT, os.path.join(ROOT, "tests")], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])  # digest, cache hits, cache misses


def test_programs_from_the_cache_compute_what_fresh_ones_do(tmp_path):
    fresh, *off = _fit("off")
    into, *first = _fit(tmp_path / "cache")
    loaded, *second = _fit(tmp_path / "cache")
    assert off == [0, 0]  # no cache consulted
    assert first[0] == 0 and first[1] > 0  # every program compiled and written...
    assert second == [first[1], 0]  # ...and every one loaded by the next process, none compiled
    assert fresh == into == loaded
