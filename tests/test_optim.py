"""fastnn.optim: every update rule against values worked out from the published (PyTorch) formulas,
in every backend (the jit update kernels meet the reference ones on many shapes in
test_kernels_parity.py).

Each rule test drives one scalar parameter w = 1 through two steps with chosen gradients g1 = 1.0
and g2 = 0.5 (set by hand, so the arithmetic below is all there is to check).
"""
import math

import numpy as np
import pytest

from fastnn import kernels, optim, use_backend
from fastnn.nn import Parameter


@pytest.fixture(autouse=True, params=kernels.BACKENDS)
def backend(request):
    """Every test runs with each backend's update kernels."""
    with use_backend(request.param):
        yield request.param


def run(optimizer_class, grads=(1.0, 0.5), w0=1.0, **options):
    """Values of w after each step of ``optimizer_class`` fed the gradients ``grads``."""
    p = Parameter(np.array([w0]))
    opt = optimizer_class([p], **options)
    history = []
    for g in grads:
        p.grad = np.array([g])
        opt.step()
        history.append(p.data[0])
    return history


def test_sgd_plain():
    # w = w - lr * g
    assert run(optim.SGD, lr=0.1) == pytest.approx([1 - 0.1 * 1.0, 1 - 0.1 * 1.0 - 0.1 * 0.5])


def test_sgd_momentum_buffer_starts_at_the_first_gradient():
    # b1 = g1 = 1;  w1 = 1 - 0.1 * 1 = 0.9
    # b2 = 0.9 * b1 + g2 = 1.4;  w2 = 0.9 - 0.1 * 1.4 = 0.76
    assert run(optim.SGD, lr=0.1, momentum=0.9) == pytest.approx([0.9, 0.76])


def test_sgd_nesterov():
    # b1 = 1;  step g1 + 0.9 * b1 = 1.9;  w1 = 1 - 0.19 = 0.81
    # b2 = 0.9 + 0.5 = 1.4;  step 0.5 + 0.9 * 1.4 = 1.76;  w2 = 0.81 - 0.176 = 0.634
    assert run(optim.SGD, lr=0.1, momentum=0.9, nesterov=True) == pytest.approx([0.81, 0.634])


def test_sgd_weight_decay_is_added_to_the_gradient_before_momentum():
    # g1' = 1 + 0.1 * 1 = 1.1;  b1 = 1.1;  w1 = 1 - 0.11 = 0.89
    # g2' = 0.5 + 0.1 * 0.89 = 0.589;  b2 = 0.9 * 1.1 + 0.589 = 1.579;  w2 = 0.89 - 0.1579 = 0.7321
    assert run(optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.1) == pytest.approx([0.89, 0.7321])


def adam_by_hand(grads, lr, beta1, beta2, eps, w=1.0, l2=0.0, decoupled=0.0):
    """Kingma & Ba's Adam written out on scalars, with PyTorch's two kinds of weight decay."""
    m = v = 0.0
    history = []
    for t, g in enumerate(grads, start=1):
        w = w * (1 - lr * decoupled)
        g = g + l2 * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        w = w - lr * m_hat / (math.sqrt(v_hat) + eps)
        history.append(w)
    return history


def test_adam_two_steps_by_hand():
    # step 1: m = 0.1, v = 0.001, m_hat = v_hat = 1, w1 = 1 - 0.1 / (1 + 1e-8)
    # step 2: m = 0.09 + 0.05 = 0.14, v = 0.000999 + 0.00025 = 0.001249,
    #         m_hat = 0.14 / 0.19, v_hat = 0.001249 / 0.001999
    w1 = 1 - 0.1 / (1 + 1e-8)
    w2 = w1 - 0.1 * (0.14 / 0.19) / (math.sqrt(0.001249 / 0.001999) + 1e-8)
    assert run(optim.Adam, lr=0.1) == pytest.approx([w1, w2], rel=1e-12)
    assert run(optim.Adam, lr=0.1) == pytest.approx(adam_by_hand((1.0, 0.5), 0.1, 0.9, 0.999, 1e-8), rel=1e-12)


def test_adam_first_step_is_lr_times_sign_thanks_to_bias_correction():
    p = Parameter(np.zeros(3))
    p.grad = np.array([0.1, -50.0, 7.0])  # |g| / (|g| + 1e-8) = 1 within 1e-7
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.data, [-0.01, 0.01, -0.01], rtol=1e-6)


def test_adam_weight_decay_is_l2_but_adamw_decays_the_weight_directly():
    # zero gradient: Adam sees g = wd * w = 0.1 and moves w by lr (first step); AdamW only shrinks w
    assert run(optim.Adam, grads=(0.0,), lr=0.01, weight_decay=0.1) == pytest.approx([1 - 0.01], rel=1e-6)
    assert run(optim.AdamW, grads=(0.0,), lr=0.01, weight_decay=0.1) == pytest.approx([1 - 0.01 * 0.1])
    expected = adam_by_hand((1.0, 0.5), lr=0.1, beta1=0.8, beta2=0.99, eps=1e-6, l2=0.2)
    assert run(optim.Adam, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.2) == pytest.approx(expected)
    expected = adam_by_hand((1.0, 0.5), lr=0.1, beta1=0.8, beta2=0.99, eps=1e-6, decoupled=0.2)
    assert run(optim.AdamW, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.2) == pytest.approx(expected)
    assert optim.AdamW([Parameter(np.zeros(1))]).weight_decay == 0.01


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, weight_decay=0.01),
    lambda ps: optim.AdamW(ps),
])
def test_updates_are_in_place_and_keep_float32(make):
    p = Parameter(np.ones((2, 3), np.float32))
    data = p.data
    opt = make([p])
    for _ in range(2):
        p.grad = np.full((2, 3), 0.5, np.float32)
        opt.step()
    assert p.data is data and p.data.dtype == np.float32
    assert all(np.asarray(v).dtype != np.float64 for v in opt.state_dict().values() if np.ndim(v) == 2)
    assert (p.data < 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, state_name", [
    (lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9), "momentum_buffer"),
    (lambda ps: optim.Adam(ps, lr=0.01), "exp_avg"),
])
def test_state_that_decays_below_the_smallest_normal_number_becomes_zero(make, state_name, dtype):
    """A gradient of 1, then zeros: the state shrinks by 0.9 a step. It is never subnormal (x86
    CPUs take ~100 cycles per operation on those): it reaches 0 from at least the smallest normal
    number, after log(tiny) / log(0.9) steps (about 830 for float32, 6,700 for float64)."""
    tiny = np.finfo(dtype).tiny
    p = Parameter(np.ones(3, dtype))
    opt = make([p])
    p.grad = np.ones(3, dtype)
    opt.step()
    p.grad = np.zeros(3, dtype)
    previous = opt.state[0][state_name].copy()
    steps = int(np.log(tiny) / np.log(0.9)) + 10
    for _ in range(steps):
        opt.step()
        state = opt.state[0][state_name]
        assert not ((state != 0) & (np.abs(state) < tiny)).any(), state
        assert (state != 0).all() or (np.abs(previous) < tiny / 0.9).all()
        previous = state.copy()
    assert (state == 0).all()
    assert np.isfinite(p.data).all()


def test_parameters_without_gradient_are_skipped_and_zero_grad_clears():
    a, b = Parameter(np.ones(1)), Parameter(np.ones(1))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(1)
    opt.step()
    assert b.data[0] == 1.0 and "state.1.step" not in opt.state_dict()
    b.grad = np.ones(1)
    opt.step()
    # b's first step: bias correction makes it move by exactly lr
    assert b.data[0] == pytest.approx(0.9)
    assert opt.state_dict()["state.0.step"] == 2 and opt.state_dict()["state.1.step"] == 1
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("bad", [
    dict(lr=-1.0), dict(lr=0.1, momentum=-0.5), dict(lr=0.1, nesterov=True), dict(lr=0.1, weight_decay=-1)])
def test_bad_sgd_arguments_raise(bad):
    with pytest.raises(ValueError):
        optim.SGD([Parameter(np.zeros(1))], **bad)


def test_bad_optimizer_arguments_raise():
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([Parameter(np.zeros(1))], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Parameter"):
        optim.SGD([np.zeros(1)], lr=0.1)


# -- state_dict ----------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_round_trips_through_npz(name, tmp_path):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(4)]
    make = OPTIMIZERS[name]

    straight = [Parameter(np.ones((2, 3), np.float32))]
    opt = make(straight)
    for g in grads:
        straight[0].grad = g
        opt.step()

    resumed = [Parameter(np.ones((2, 3), np.float32))]
    first = make(resumed)
    for g in grads[:2]:
        resumed[0].grad = g
        first.step()
    state = first.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["lr"].shape == ()
    np.savez(tmp_path / "opt.npz", **state)
    second = make(resumed)
    second.lr = 123.0  # to be restored
    with np.load(tmp_path / "opt.npz") as saved:
        second.load_state_dict(saved)
    assert second.lr == first.lr and type(second.lr) is float
    for g in grads[2:]:
        resumed[0].grad = g
        second.step()
    np.testing.assert_array_equal(resumed[0].data, straight[0].data)


def test_optimizer_state_dict_holds_copies():
    p = Parameter(np.ones(2))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2)
    opt.step()
    opt.state_dict()["state.0.momentum_buffer"][:] = 100
    opt.step()
    np.testing.assert_allclose(p.data, [1 - 0.1 - 0.1 * 1.9] * 2)  # b2 = 0.9 * 1 + 1 = 1.9


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("betas"), "betas"),
    (lambda s: s.pop("state.0.exp_avg_sq"), "state.0.exp_avg_sq"),
    (lambda s: s.update({"state.0.exp_avg": np.zeros(5)}), "state.0.exp_avg"),
    (lambda s: s.update({"state.1.step": np.array(1)}), "state.1.step"),
    (lambda s: s.update(momentum=np.array(0.9)), "momentum"),
])
def test_optimizer_load_state_dict_is_strict_and_atomic(change, message):
    p = Parameter(np.ones(2))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    change(state)
    state["lr"] = np.array(0.5)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        opt.load_state_dict(state)
    assert opt.lr == 0.1


# -- schedules -----------------------------------------------------------------------------------

def lrs(schedule_class, epochs, lr=1.0, **options):
    opt = optim.SGD([Parameter(np.zeros(1))], lr=lr)
    schedule = schedule_class(opt, **options)
    history = [opt.lr]
    for _ in range(epochs):
        schedule.step()
        history.append(opt.lr)
    return history


def test_step_lr():
    # lr = 1 * 0.5 ** (epoch // 2)
    assert lrs(optim.StepLR, 5, step_size=2, gamma=0.5) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_cosine_annealing_lr():
    # lr = 0.1 + (1.1 - 0.1) * (1 + cos(pi * t / 4)) / 2, cos(pi/4) = sqrt(2)/2, cos(3pi/4) = -sqrt(2)/2
    half_root2 = math.sqrt(2) / 2
    expected = [1.1, 0.1 + (1 + half_root2) / 2, 0.6, 0.1 + (1 - half_root2) / 2, 0.1]
    assert lrs(optim.CosineAnnealingLR, 4, lr=1.1, T_max=4, eta_min=0.1) == pytest.approx(expected)


@pytest.mark.parametrize("make", [
    lambda opt: optim.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: optim.CosineAnnealingLR(opt, T_max=5, eta_min=0.01),
])
def test_schedule_state_round_trips_through_npz(make, tmp_path):
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    schedule = make(opt)
    for _ in range(3):
        schedule.step()
    np.savez(tmp_path / "schedule.npz", **schedule.state_dict())
    expected = [schedule.step() or opt.lr for _ in range(2)]

    fresh_opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    fresh = make(fresh_opt)
    with np.load(tmp_path / "schedule.npz") as saved:
        fresh.load_state_dict(saved)
    assert fresh.last_epoch == 3
    assert [fresh.step() or fresh_opt.lr for _ in range(2)] == expected

    bad = dict(schedule.state_dict(), extra=np.array(1))
    with pytest.raises(ValueError, match="extra"):
        fresh.load_state_dict(bad)


def test_bad_schedule_arguments_raise():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, T_max=0)

