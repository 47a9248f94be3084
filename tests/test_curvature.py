"""Forward mode, Hessian-vector and Gauss-Newton products, per-example gradients: hand-derived vs references.

References are independent of funcnn: a plainly written forward and loss
(``tests/reference.py``'s activations and outputs), ``jax.jvp``/``jax.grad``/
``jax.hessian`` of them, the explicitly formed ``J^T H_out J``, and
``jax.vmap(jax.grad(...))``. Tolerances (normwise relative, max over leaves):
float64 < 1e-10, float32 < 1e-4.

One network covers every built-in activation (one dense layer each), a
layer norm and a residual block. It is checked for every (output, loss) pair
at batch 5 with L2 in float64, at batch 1 without L2 (softmax +
cross-entropy) in float64, at width 1 (no layer norm: over one feature it is
constant) and batch 3 without L2 (sigmoid + mse) in float64, and once in
float32 (softmax + mse, batch 5, L2). Each case is one jitted program (one
compile, ~1-2 s on an idle core): the case list is chosen to keep the file
near 30 s on an idle machine. ``net.hvp`` is hand-derived (R{backprop}), so
its references here never run funcnn's backward: ``jax.jvp(jax.grad(plain
loss))`` and, in one case, the formed Hessian.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from reference import HIDDEN_NAMES, PAIRS, REF_ACT, normwise_rel_err, record, ref_output

import funcnn
from funcnn import activations, losses
from funcnn import layers as L

TOL = {"float64": 1e-10, "float32": 1e-4}
D, W, M = 3, 3, 2  # input, hidden and output widths
# (dtype, output, loss, batch, l2, hidden width)
# softmax + mse first: it runs the most rules (every activation, layer norm, residual, softmax's rvjp,
# L2), so most wrong rules fail after the first compile (scripts/mutate.py's second-order mutants).
CASES = ([("float64", o, lo, 5, 0.3, W) for o, lo in sorted(PAIRS, key=lambda p: p != ("softmax", "mse"))] + [("float64", "softmax", "cross_entropy", 1, 0.0, W),
                                                               ("float64", "sigmoid", "mse", 3, 0.0, 1),
                                                               ("float32", "softmax", "mse", 5, 0.3, W)])


def make_net(output, loss, l2, width=W):
    body = [L.dense(width, a) for a in HIDDEN_NAMES] + ([L.layer_norm()] if width > 1 else [])
    # The residual's tanh is an activation layer after a linear dense: the same maths as dense(width,
    # "tanh"), so the activation layer's own rules are checked too.
    return funcnn.network(body + [L.residual(L.dense(width), L.activation("tanh")), L.dense(M)], input_size=D,
                          output=output, loss=loss, l2=l2)


def plain_logits(params, x):
    h = x
    k = len(HIDDEN_NAMES)
    for p, a in zip(params[:k], HIDDEN_NAMES):
        h = REF_ACT[a](h @ p["W"] + p["b"][None, :])
    if "gain" in params[k]:  # the layer norm (absent at width 1)
        ln = params[k]
        c = h - jnp.mean(h, axis=1, keepdims=True)
        h = c / jnp.sqrt(jnp.mean(c * c, axis=1, keepdims=True) + 1e-5) * ln["gain"][None, :] + ln["bias"][None, :]
        k += 1
    r = params[k][0]
    h = h + REF_ACT["tanh"](h @ r["W"] + r["b"][None, :])
    return h @ params[-1]["W"] + params[-1]["b"][None, :]


def data_loss_of_output(out, y, loss, n):
    if loss == "mse":
        return jnp.sum((out - y) ** 2) / (2 * n)
    if loss == "cross_entropy":
        t = jax.nn.one_hot(y, out.shape[1], dtype=out.dtype) if jnp.issubdtype(y.dtype, jnp.integer) else y
        return -jnp.sum(t * jnp.log(out)) / n
    return -jnp.sum(y * jnp.log(out) + (1 - y) * jnp.log(1 - out)) / n


def plain_loss(params, x, y, output, loss, l2):
    n = x.shape[0]
    data = data_loss_of_output(ref_output(output, plain_logits(params, x)), y, loss, n)
    return data + l2 / (2 * n) * sum(jnp.sum(w ** 2) for w in losses.weights(params))


def problem(output, loss, n, dtype, seed=0, width=W):
    net = make_net(output, loss, 0.0, width)
    k = jax.random.split(jax.random.key(seed), 6)
    params = net.init(k[0], dtype=dtype)
    # Random biases and gains, so no layer sits at a special point.
    params = jax.tree.map(lambda a, kk: a + 0.3 * jax.random.normal(kk, a.shape, dtype), params,
                          jax.tree.unflatten(jax.tree.structure(params),
                                             list(jax.random.split(k[1], len(jax.tree.leaves(params))))))
    x = jax.random.normal(k[2], (n, D), dtype)
    if loss == "cross_entropy":
        y = jax.random.randint(k[3], (n,), 0, M)
    elif loss == "binary_cross_entropy":
        y = jax.random.bernoulli(k[3], 0.5, (n, M)).astype(dtype)
    else:
        y = jax.random.normal(k[3], (n, M), dtype)
    flat, unravel = ravel_pytree(params)
    v = unravel(jax.random.normal(k[4], flat.shape, dtype))
    dx = jax.random.normal(k[5], x.shape, dtype)
    return params, x, y, v, dx


def weight_mask(params):
    return ravel_pytree(jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.full_like(a, 1.0 if path[-1].key == "W" else 0.0), params))[0]


def explicit_gauss_newton(params, x, y, output, loss, l2):
    """G = J^T H_out J + (l2/n) diag(W mask), formed explicitly ([P, P])."""
    flat, unravel = ravel_pytree(params)
    n = x.shape[0]
    if loss == "mse":  # the outputs' Hessian (generalised Gauss-Newton of y = out(z))
        def f(th):
            return ref_output(output, plain_logits(unravel(th), x)).reshape(-1)

        def h(o):
            return data_loss_of_output(o.reshape(n, M), y, loss, n)
    else:  # the logits' Hessian
        def f(th):
            return plain_logits(unravel(th), x).reshape(-1)

        def h(z):
            return data_loss_of_output(ref_output(output, z.reshape(n, M)), y, loss, n)
    J = jax.jacfwd(f)(flat)  # [n m, P]
    H = jax.hessian(h)(f(flat))  # [n m, n m]
    return J.T @ H @ J + l2 / n * jnp.diag(weight_mask(params))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(map(str, c)))
def case(request):
    """One case's products and references, as one jitted program: (case, results, eigenvalues of G).

    One case at a time (pytest runs every test of a case before compiling the
    next), so a wrong rule fails after one compile, not after all of them.
    """
    dt, output, loss, n, l2, width = request.param
    dtype = jnp.dtype(dt)
    net = make_net(output, loss, l2, width)
    params, x, y, v, dx = problem(output, loss, n, dtype, width=width)
    dy = None if loss == "cross_entropy" else jax.random.normal(jax.random.key(9), y.shape, dtype)

    def pl(p, x, y, output=output, loss=loss, l2=l2):
        return plain_loss(p, x, y, output, loss, l2)

    full_hessian = (dt, output, loss, n, width) == ("float64", "softmax", "cross_entropy", 5, W)

    @jax.jit
    def run(params, x, y, v, dx, dy, net=net, pl=pl, output=output, loss=loss, l2=l2, full_hessian=full_hessian):
        r = {}
        r["jvp"] = (net.jvp(params, x, v, dx),
                    jax.jvp(lambda p, xx: ref_output(output, plain_logits(p, xx)), (params, x), (v, dx)))
        tang = (v, dx) if dy is None else (v, dx, dy)
        prim = (params, x) if dy is None else (params, x, y)
        if dy is None:
            ours = jax.jvp(lambda p, xx: net.loss_manual_jvp(p, xx, y), prim, tang)
            ref = jax.jvp(lambda p, xx: pl(p, xx, y), prim, tang)
        else:
            ours = jax.jvp(net.loss_manual_jvp, prim, tang)
            ref = jax.jvp(pl, prim, tang)
        r["loss_manual_jvp"] = (ours, ref)
        r["grad(loss_manual_jvp)"] = (jax.grad(net.loss_manual_jvp)(params, x, y), net.grad(params, x, y))
        ref_hv = jax.jvp(jax.grad(lambda p: pl(p, x, y)), (params,), (v,))[1]
        r["hvp"] = (net.hvp(params, x, y, v), ref_hv)
        r["hessian(loss_manual_jvp)"] = (
            jax.jvp(jax.grad(lambda p: net.loss_manual_jvp(p, x, y)), (params,), (v,))[1], ref_hv)
        if full_hessian:  # the [P, P] Hessian is the costliest reference: formed in one case
            flat, unravel = ravel_pytree(params)
            Hfull = jax.hessian(lambda th: pl(unravel(th), x, y))(flat)
            r["hvp vs hessian"] = (ravel_pytree(net.hvp(params, x, y, v))[0], Hfull @ ravel_pytree(v)[0])
        G = explicit_gauss_newton(params, x, y, output, loss, l2)
        r["gnvp"] = (ravel_pytree(net.gnvp(params, x, y, v))[0], G @ ravel_pytree(v)[0])
        pe_ref = jax.vmap(lambda xi, yi: jax.grad(pl)(params, xi[None], yi[None]))(x, y)
        r["per_example_grads"] = (net.per_example_grads(params, x, y), pe_ref)
        ref_norms = jnp.sqrt(sum(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1)
                                 for a in jax.tree.leaves(pe_ref)))
        r["per_example_grad_norms"] = (net.per_example_grad_norms(params, x, y), ref_norms)
        return r, jnp.linalg.eigvalsh(G)

    return request.param, jax.device_get(run(params, x, y, v, dx, dy))


PRODUCTS = ("jvp", "loss_manual_jvp", "grad(loss_manual_jvp)", "hvp", "hessian(loss_manual_jvp)",
            "hvp vs hessian", "gnvp", "per_example_grads", "per_example_grad_norms")


@pytest.mark.parametrize("product", PRODUCTS)
def test_product_matches_reference(case, product):
    """Each product equals its independent reference in this case (the worst error is recorded)."""
    key, (r, _) = case
    if product not in r:  # "hvp vs hessian": the [P, P] Hessian is formed in one case only
        assert product == "hvp vs hessian"
        return
    ours, ref = r[product]
    err = normwise_rel_err(ours, ref)
    record(f"curvature {product}", key[0], err)
    assert err < TOL[key[0]], f"{product} in case {key}: {err:.2e}"


def test_gauss_newton_is_positive_semidefinite(case):
    """The explicitly formed G's eigenvalues are >= -tolerance in this case."""
    key, (_, eig) = case
    assert eig.min() >= -TOL[key[0]] * max(1.0, abs(eig).max()), key


def test_gauss_newton_quadratic_form_is_nonnegative():
    """v^T (net.gnvp v) >= -tolerance on random v, for every (output, loss) pair."""
    assert sum(c[:5] == ("float64", "softmax", "cross_entropy", 5, 0.3) for c in CASES) == 1  # the full Hessian
    for output, loss in PAIRS:
        net = make_net(output, loss, 0.0)
        params, x, y, _, _ = problem(output, loss, 5, jnp.float64, seed=3)
        flat, unravel = ravel_pytree(params)
        vs = jax.random.normal(jax.random.key(4), (8, flat.size), jnp.float64)
        def quad(u, net=net, params=params, x=x, y=y, unravel=unravel):
            return u @ ravel_pytree(net.gnvp(params, x, y, unravel(u)))[0]
        q = jax.jit(jax.vmap(quad))(vs)
        assert jnp.min(q) >= -1e-12 * jnp.max(jnp.abs(q)), (output, loss, q)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_activation_second_derivatives(dtype):
    """Every built-in grad2 equals jax's derivative of its grad (away from kinks: relu'' = 0 there)."""
    z = jnp.array([-2.5, -0.7, -0.1, 0.2, 0.9, 3.1], dtype)
    for name in activations.HIDDEN:
        a = activations.HIDDEN[name]

        def g(t, a=a):
            return a.grad(t, a.fn(t))
        ref = jax.vmap(jax.grad(g))(z)
        got = a.grad2(z, a.fn(z))
        assert got.dtype == z.dtype
        assert normwise_rel_err(got, ref) < TOL[dtype] or np.max(np.abs(np.asarray(ref))) == 0 \
            and np.all(np.asarray(got) == 0), name
    relu = activations.HIDDEN["relu"]
    assert relu.grad2(jnp.zeros(1), jnp.zeros(1))[0] == 0  # the convention at the kink


def test_user_layer_without_jvp_gets_a_clear_error_and_norms_fall_back():
    """A user's layer with no jvp works for grad; forward mode names it; per-example norms use the fallback."""
    def init(key, d, dtype):
        return d, {"W": jax.random.normal(key, (d,), dtype)}

    def forward(p, x, *, key=None):
        return x * p["W"][None, :], x

    def backward(p, x, dy):
        return {"W": jnp.sum(dy * x, axis=0)}, dy * p["W"][None, :]

    scale = L.Layer("scale", init, forward, backward, L.spec("scale"), smooth=True)
    net = funcnn.network([L.dense(3, "tanh"), scale, L.dense(2)], input_size=3, l2=0.2)
    params, x, y = net.init(jax.random.key(0), dtype=jnp.float64), jnp.ones((4, 3)) * 0.5, jnp.array([0, 1, 1, 0])
    with pytest.raises(TypeError, match="'scale' has no jvp"):
        net.jvp(params, x, params)
    with pytest.raises(TypeError, match="'scale' has no jvp"):
        net.gnvp(params, x, y, params)
    pe = net.per_example_grads(params, x, y)
    ref = jnp.sqrt(sum(jnp.sum(a.reshape(4, -1) ** 2, axis=1) for a in jax.tree.leaves(pe)))
    assert normwise_rel_err(net.per_example_grad_norms(params, x, y), ref) < 1e-12
    assert normwise_rel_err(net.hvp(params, x, y, params),  # the documented fallback: jax.jvp over scale alone
                            jax.jvp(jax.grad(lambda p: net.loss(p, x, y)), (params,), (params,))[1]) < 1e-10


def test_bad_arguments_are_named():
    net = make_net("softmax", "cross_entropy", 0.0)
    params, x, y, v, _ = problem("softmax", "cross_entropy", 2, jnp.float64)
    with pytest.raises(ValueError, match="v must have the structure"):
        net.hvp(params, x, y, v[:-1])
    with pytest.raises(ValueError, match="dparams must have the structure"):
        net.jvp(params, x, v[1:])
    with pytest.raises(ValueError, match="dx must have"):
        net.jvp(params, x, v, jnp.ones((3, D)))
    no_hess = funcnn.losses.LOSSES["mse"]._replace(name="my_mse", hess=None)
    net2 = funcnn.network([L.dense(2)], input_size=D, output="identity", loss=no_hess)
    p2 = net2.init(jax.random.key(0), dtype=jnp.float64)
    with pytest.raises(TypeError, match="'my_mse' has no hess"):
        net2.gnvp(p2, x, jnp.zeros((2, 2)), p2)


def test_mlp_networks_have_the_products():
    """funcnn.mlp goes through network.build, so its networks carry the products too."""
    net = funcnn.mlp([3, 4, 2], hidden="relu", output="softmax", loss="cross_entropy", l2=0.1)
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    x, y = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64), jnp.array([0, 1, 1, 0, 1])
    pe = net.per_example_grads(params, x, y)
    assert pe[0]["W"].shape == (5, 3, 4)
    ref = jnp.sqrt(sum(jnp.sum(a.reshape(5, -1) ** 2, axis=1) for a in jax.tree.leaves(pe)))
    assert normwise_rel_err(net.per_example_grad_norms(params, x, y), ref) < 1e-12


def test_check_jvp_passes_built_ins_and_catches_a_wrong_rule():
    """gradcheck.check_jvp: every built-in layer's rule passes; a layer norm JVP missing a term fails on x."""
    x = jax.random.normal(jax.random.key(0), (5, 3), jnp.float64)
    for layer in (L.dense(3, "gelu"), L.layer_norm(), L.residual(L.dense(3, "elu")), L.activation("swish")):
        p = layer.init(jax.random.key(1), 3, jnp.float64)[1]
        rep = funcnn.gradcheck.check_jvp(layer, p, x)
        assert rep.passed, str(rep)
    ln = L.layer_norm()

    def wrong(params, x, dparams, dx):  # forgets the variance's derivative
        y, (xhat, inv) = ln.forward(params, x)
        dxc = dx - jnp.mean(dx, axis=-1, keepdims=True)
        return y, dparams["gain"][None, :] * xhat + params["gain"][None, :] * inv * dxc + dparams["bias"][None, :]
    bad = ln._replace(name="bad_norm", jvp=wrong)
    rep = funcnn.gradcheck.check_jvp(bad, ln.init(jax.random.key(1), 3, jnp.float64)[1], x)
    failed = {r.path.split(" ")[1] for r in rep.rows if not r.passed}
    assert failed == {"x"}, str(rep)


def test_check_hvp_catches_a_wrong_grad2_that_first_order_checks_cannot_see():
    """tanh'' with its sign flipped: the gradient is exact, net.hvp is not; check_hvp names the layer."""
    tanh = activations.HIDDEN["tanh"]
    flipped = tanh._replace(name="flipped_tanh", grad2=lambda z, y: 2 * y * (1 - y * y))
    x = jax.random.normal(jax.random.key(0), (5, 3), jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1])
    for act, ok in ((tanh, True), (flipped, False)):
        net = funcnn.network([L.dense(4, act), L.dense(2)], input_size=3, l2=0.1)
        params = net.init(jax.random.key(2), dtype=jnp.float64)
        assert funcnn.gradcheck(net, params, x, y).passed  # first order cannot tell them apart
        rep = funcnn.gradcheck.check_hvp(net, params, x, y)
        assert rep.passed is ok, str(rep)
        if not ok:
            assert {p for p in rep.failed_pieces} == {"dense(4, flipped_tanh)"}, str(rep)


def test_check_hvp_catches_a_wrong_per_layer_R_rule():
    """A layer norm whose R-backward drops the variance's tangent (rinv): the leaves below it fail."""
    ln = L.layer_norm()

    def wrong(params, v, c, dy, rdy):
        rg, dx, rdx = ln.rbackward(params, v, c, dy, rdy)
        return rg, dx, rdx + c.a * c.inv * dx  # undoes the "- a inv dx" term
    bad = ln._replace(name="bad_norm", rbackward=wrong)
    x = jax.random.normal(jax.random.key(0), (5, 3), jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1])
    net = funcnn.network([L.dense(4, "tanh"), bad, L.dense(2)], input_size=3)
    params = net.init(jax.random.key(2), dtype=jnp.float64)
    rep = funcnn.gradcheck.check_hvp(net, params, x, y)
    assert not rep.passed and set(rep.failed_pieces) == {"dense(4, tanh)"}, str(rep)


def test_built_in_networks_run_no_autodiff_in_hvp(monkeypatch):
    """Every built-in piece carries its second-order rule, so net.hvp never reaches JAX's autodiff."""
    for a in activations.HIDDEN.values():
        assert a.grad2 is not None, a.name
    for o in activations.OUTPUT.values():
        assert o.jvp is not None and o.rvjp is not None, o.name
    for lo in losses.LOSSES.values():
        assert lo.hess is not None, lo.name
    cases = [(make_net(o, lo, 0.3), problem(o, lo, 2, jnp.float64)[:4]) for o, lo in PAIRS]
    extra = funcnn.network([L.dense(3, "relu", dropout=0.5), L.dropout(0.5), L.activation("gelu"),
                            L.residual(L.layer_norm(), L.dense(3, "elu")), L.dense(M)], input_size=D)
    p = extra.init(jax.random.key(0), dtype=jnp.float64)
    cases.append((extra, (p, jnp.ones((2, D)), jnp.array([0, 1]), p)))

    def no_autodiff(*args, **kwargs):
        raise AssertionError("net.hvp called JAX's autodiff")
    for name in ("jvp", "vjp", "linearize", "grad"):
        monkeypatch.setattr(jax, name, no_autodiff)
    for net, (params, x, y, v) in cases:
        for layer in net.layers:
            assert layer.rforward is not None and layer.rbackward is not None, layer.name
        jax.eval_shape(net.hvp, params, x, y, v)  # traces the whole product


def test_missing_second_order_pieces_are_named():
    """A user activation without grad2, or output without rvjp, stops net.hvp with its name; the rest works."""
    softsign = activations.Activation("softsign", lambda z: z / (1 + jnp.abs(z)),
                                      lambda z, y: (1 - jnp.abs(y)) ** 2)
    net = funcnn.network([L.dense(3, softsign), L.dense(2)], input_size=D)
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    x, y = jnp.ones((2, D)), jnp.array([0, 1])
    with pytest.raises(TypeError, match="'softsign' has no grad2: net.hvp"):
        net.hvp(params, x, y, params)
    net.gnvp(params, x, y, params)  # first derivatives only: works
    net.jvp(params, x, params)
    my_sigmoid = activations.OUTPUT["sigmoid"]._replace(name="my_sigmoid", rvjp=None)
    net2 = funcnn.network([L.dense(2)], input_size=D, output=my_sigmoid, loss="mse")
    p2 = net2.init(jax.random.key(0), dtype=jnp.float64)
    with pytest.raises(TypeError, match="'my_sigmoid' has no rvjp"):
        net2.hvp(p2, x, jnp.zeros((2, 2)), p2)
    lone = L.layer_norm()._replace(name="half", rbackward=None)
    with pytest.raises(TypeError, match="rforward and rbackward come as a pair"):
        funcnn.network([lone, L.dense(2)], input_size=D)
