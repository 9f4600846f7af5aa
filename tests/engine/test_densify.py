"""Sampling-based (FATE §3.2) and threshold densification, pruning and opacity reset."""

import pytest
import torch

from engine.model.gaussians import UVGaussians
from engine.train.densify.config import DensifyConfig
from engine.train.densify.factory import make_strategy
from engine.train.densify.ops import add_children, reset_opacity
from engine.train.densify.sampling import sample_parents


def _model(n=50, seed=0):
    torch.manual_seed(seed)
    verts = torch.tensor([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0.01, 0.01, 0.0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    face_idx = torch.randint(0, 2, (n,))
    bary = torch.rand(n, 3)
    bary = bary / bary.sum(1, keepdim=True)
    m = UVGaussians.from_bindings(face_idx, bary, verts, faces)
    m.sh0.data = torch.randn(n, 3)
    return m, verts, faces


def _optimizer(m):
    return torch.optim.Adam([{"params": [getattr(m, p)], "lr": 1e-2} for p in UVGaussians.PARAMETERS])


def _accumulate(strategy, state, grads, visible):
    """Feeds one step's ∂L/∂μ [N, 3] and visibility [N] to the strategy's post-backward hook."""
    means = torch.zeros_like(grads, requires_grad=True)
    means.grad = grads
    strategy.step_post_backward(state, {"means": means, "radii": visible.float()})


def _fake_step(m, opt):
    loss = sum((getattr(m, p) + 1.0).square().sum() for p in UVGaussians.PARAMETERS)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_sample_parents_follows_importance():
    # Eq. 6: p_k = I_k / sum I. With 20000 draws the frequencies match within ~3 sigma.
    imp = torch.tensor([0.0, 1.0, 3.0, 6.0])
    g = torch.Generator().manual_seed(0)
    idx = sample_parents(imp, 20000, g)
    freq = torch.bincount(idx, minlength=4).float() / 20000
    torch.testing.assert_close(freq, imp / imp.sum(), atol=0.015, rtol=0)
    assert freq[0] == 0  # zero importance is never drawn


def test_sample_parents_all_zero_gives_nothing():
    assert sample_parents(torch.zeros(5), 10).numel() == 0


def test_children_inherit_attributes_and_bind_to_parent_face():
    m, _, _ = _model()
    opt = _optimizer(m)
    _fake_step(m, opt)
    n = len(m)
    parents = torch.tensor([3, 3, 7])
    before = {p: getattr(m, p).detach().clone() for p in UVGaussians.PARAMETERS}
    add_children(m, opt, parents, torch.Generator().manual_seed(1))
    assert len(m) == n + 3
    assert torch.equal(m.face_idx[n:], m.face_idx[parents])
    for p in UVGaussians.PARAMETERS:
        assert torch.equal(getattr(m, p)[n:], before[p][parents]), p
        assert torch.equal(getattr(m, p)[:n], before[p]), p
    # barycentric coordinates of the children are valid and new (Eq. 7-8)
    b = m.bary[n:]
    torch.testing.assert_close(b.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    assert (b > 0).all()
    # the optimiser now holds the new parameters; children's Adam moments are zero
    for group in opt.param_groups:
        p = group["params"][0]
        assert p.shape[0] == n + 3
        st = opt.state[p]
        assert torch.count_nonzero(st["exp_avg"][n:]) == 0
        assert torch.count_nonzero(st["exp_avg"][:n]) > 0
    _fake_step(m, opt)  # and a further step works


def test_schedule_adds_fixed_count_prunes_and_resets():
    m, _, _ = _model(100)
    opt = _optimizer(m)
    cfg = DensifyConfig(strategy="sampling", start=1, every=2, count=10, prune_every=4,
                        prune_opacity=0.05, reset_every=4, reset_opacity=0.01, max_gaussians=10_000,
                        gradient="world")
    d = make_strategy(cfg)
    state = d.initialize_state(len(m))
    _accumulate(d, state, torch.rand(len(m), 3), torch.ones(len(m), dtype=torch.bool))
    out = d.step_post_update(state, 2, m, opt)
    assert out["added"] == 10 and len(m) == 110
    assert state["grad_accum"].shape[0] == 110
    m.opacity_logit.data[:5] = -10.0  # opacity ~4.5e-5 < 0.05
    out = d.step_post_update(state, 4, m, opt)
    assert out["pruned"] == 5 and len(m) == 105
    assert out["reset"] == 1
    assert m.opacities().max() <= 0.01 + 1e-6


def test_budget_is_respected():
    m, _, _ = _model(100)
    opt = _optimizer(m)
    d = make_strategy(DensifyConfig(start=1, every=1, count=1000, max_gaussians=120, gradient="world"))
    state = d.initialize_state(len(m))
    _accumulate(d, state, torch.rand(len(m), 3), torch.ones(len(m), dtype=torch.bool))
    d.step_post_update(state, 1, m, opt)
    assert len(m) == 120


def test_threshold_strategy_clones_and_splits():
    m, _, _ = _model(20)
    opt = _optimizer(m)
    m.scale_log.data[:2] = 2.0  # large: split
    d = make_strategy(DensifyConfig(strategy="threshold", start=1, every=1, grad_threshold=0.5,
                                    split_scale=2.0, prune_every=0, reset_every=0))
    state = d.initialize_state(len(m))
    grads = torch.zeros(20, 3)
    grads[:4, 0] = 1.0  # four above the threshold: two split, two cloned
    _accumulate(d, state, grads, torch.ones(20, dtype=torch.bool))
    out = d.step_post_update(state, 1, m, opt)
    assert out["added"] == 4 and len(m) == 24
    torch.testing.assert_close(m.scale_log[:2], torch.full((2, 3), 2.0 - torch.log(torch.tensor(1.6)).item()))
    torch.testing.assert_close(m.scale_log[2:4], m.scale_log[22:24])


def test_invalid_strategy_is_a_config_error():
    from engine.errors import ConfigError
    with pytest.raises(ConfigError, match="strategy"):
        DensifyConfig(strategy="magic")


def test_reset_zeroes_opacity_moments():
    m, _, _ = _model()
    opt = _optimizer(m)
    _fake_step(m, opt)
    reset_opacity(m, opt, 0.01)
    assert torch.count_nonzero(opt.state[m.opacity_logit]["exp_avg"]) == 0


def test_fate_sampling_uses_the_summed_screen_gradient_and_shrinks_children():
    """FATE's code: importance = Σ‖∂L/∂μ₂ᴅ‖ over the steps a Gaussian was drawn (not the mean of
    the 3D gradient), children at 0.75 of the parent's scale."""
    m, _, _ = _model(4)
    opt = _optimizer(m)
    d = make_strategy(DensifyConfig(strategy="sampling", start=1, every=1, count=2000, prune_every=0,
                                    reset_every=0, gradient="screen", child_scale=0.75))
    state = d.initialize_state(len(m))
    for visible in ([True, True, False, False], [True, False, False, False]):
        means2d = torch.zeros(4, 2, requires_grad=True)
        means2d.grad = torch.tensor([[3.0, 4.0], [0.0, 1.0], [9.0, 9.0], [0.0, 0.0]])  # norms 5, 1, .., 0
        d.step_post_backward(state, {"means": None, "means2d": means2d, "radii": torch.tensor(visible).float()})
    torch.testing.assert_close(state["grad_accum"], torch.tensor([10.0, 1.0, 0.0, 0.0]))  # summed, visible only
    torch.testing.assert_close(d.importance(state), state["grad_accum"])
    m.sh0.data = torch.arange(4.0)[:, None].expand(4, 3).clone()  # tag each parent by its colour
    scale_before = m.scale_log.detach().clone()
    out = d.step_post_update(state, 1, m, opt, torch.Generator().manual_seed(0))
    assert out["added"] == 2000
    parent = m.sh0[4:, 0].round().long()  # children inherit the parent's attributes
    share = torch.bincount(parent, minlength=4).float() / 2000
    torch.testing.assert_close(share, torch.tensor([10 / 11, 1 / 11, 0.0, 0.0]), atol=0.03, rtol=0)  # Eq. 6
    torch.testing.assert_close(m.scale_log[4:], scale_before[parent] + torch.log(torch.tensor(0.75)), atol=1e-5, rtol=0)


def test_world_gradient_keeps_the_round1_mean_rule():
    m, _, _ = _model(3)
    d = make_strategy(DensifyConfig(strategy="sampling", gradient="world", child_scale=1.0))
    state = d.initialize_state(len(m))
    for _ in range(2):
        _accumulate(d, state, torch.tensor([[2.0, 0, 0], [0, 0, 0], [1.0, 0, 0]]), torch.tensor([True, True, False]))
    torch.testing.assert_close(d.importance(state), torch.tensor([2.0, 0.0, 0.0]))  # mean over visible steps
