"""Preference-control scores on outputs with a known degree of steering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from piebench.errors import UsageError
from piebench.metrics import control as ctl

P, U, S = 6, 4, 12  # photos, users, image size


def _scene(seed: int = 0):
    """(x [P,3,S,S], tgt [P,U,3,S,S]): each user's target = input + an independent edit."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(P, 3, S, S, generator=gen)
    edits = 0.1 * torch.randn(P, U, 3, S, S, generator=gen)
    return x, x[:, None] + edits


def _coupled(x, tgt, eps):
    """out_u = x + eps * (t_u - x)."""
    return x[:, None] + eps * (tgt - x[:, None])


def test_mse_and_psnr_matrices_index_output_then_target():
    x, tgt = _scene()
    out = _coupled(x, tgt, 0.5)
    m = ctl.mse_matrix(out, tgt)
    assert m.shape == (P, U, U) and m.dtype == np.float64
    assert m[2, 1, 3] == pytest.approx(((out[2, 1].double() - tgt[2, 3].double()) ** 2).mean().item())
    assert np.allclose(ctl.psnr_matrix(out, tgt), 10 * np.log10(1 / m))
    assert np.allclose(ctl.target_matrix(tgt), ctl.target_matrix(tgt).transpose(0, 2, 1))
    assert np.all(np.diagonal(ctl.target_matrix(tgt), axis1=1, axis2=2) == 0)


def test_oracle_steers_fully_and_is_always_identified():
    _, tgt = _scene()
    steer = ctl.steering_score(ctl.mse_matrix(tgt, tgt), ctl.target_matrix(tgt))
    assert steer.score.mean == pytest.approx(1.0)
    assert steer.score.lo == pytest.approx(1.0) and steer.score.hi == pytest.approx(1.0)
    off = ~np.eye(U, dtype=bool)
    assert np.allclose(steer.pairs[off], 1.0) and np.isnan(np.diag(steer.pairs)).all()
    assert ctl.control_accuracy(ctl.psnr_matrix(tgt, tgt)) == 1.0


def test_constant_output_ignores_the_preference():
    x, tgt = _scene()
    out = x[:, None].expand(-1, U, -1, -1, -1)
    steer = ctl.steering_score(ctl.mse_matrix(out, tgt), ctl.target_matrix(tgt))
    assert steer.score.mean == pytest.approx(0.0, abs=1e-12) and not steer.score.excludes_zero
    sens = ctl.sensitivity(ctl.psnr_matrix(out, tgt))
    assert sens.shape == (P, U) and np.allclose(sens, 0.0)
    assert ctl.control_accuracy(ctl.psnr_matrix(out, tgt)) == 0.0  # all ties: nothing identified


@pytest.mark.parametrize("seed", [0, 1])
def test_graded_coupling_steering_rises_with_eps_and_tracks_it(seed):
    x, tgt = _scene(seed)
    d_tgt = ctl.target_matrix(tgt)
    scores = [ctl.steering_score(ctl.mse_matrix(_coupled(x, tgt, e), tgt), d_tgt, n_boot=200).score.mean
              for e in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False))
    # S[u,v] + S[v,u] = 2 eps exactly for this coupling (shared symmetric denominator), so the
    # mean over ordered pairs is eps
    assert np.allclose(scores, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    sens = [ctl.sensitivity(ctl.psnr_matrix(_coupled(x, tgt, e), tgt)).mean() for e in (0.2, 0.6, 1.0 - 1e-3)]
    assert sens[0] > 0 and sens[0] < sens[1] < sens[2]


def test_control_accuracy_counts_columns():
    # [U, U] matrix: target 0 best matched by out 0, target 1 by out 0 (wrong), target 2 by out 2
    m = np.array([[30.0, 28.0, 20.0],
                  [25.0, 27.0, 21.0],
                  [24.0, 22.0, 29.0]])
    assert ctl.control_accuracy(m) == pytest.approx(2 / 3)
    assert ctl.sensitivity(m)[0].tolist() == pytest.approx([30 - 24.5, 27 - 25.0, 29 - 20.5])


def test_steering_ci_excludes_zero_for_partial_control():
    x, tgt = _scene(3)
    eps = torch.linspace(0.1, 0.5, P).view(P, 1, 1, 1, 1)  # the coupling varies by photo
    out = x[:, None] + eps * (tgt - x[:, None])
    steer = ctl.steering_score(ctl.mse_matrix(out, tgt), ctl.target_matrix(tgt), seed=1)
    assert steer.score.excludes_zero and 0.1 < steer.score.lo < steer.score.mean < steer.score.hi < 0.5
    assert steer.per_user.shape == (U,)


def test_heatmap_writes_png(tmp_path):
    x, tgt = _scene()
    m = ctl.psnr_matrix(_coupled(x, tgt, 0.7), tgt).mean(0)
    path = ctl.control_heatmap(m, ["a", "b", "c", "d"], tmp_path / "control.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(UsageError, match="U names"):
        ctl.control_heatmap(m, ["a", "b"], tmp_path / "bad.png")


def test_shape_errors():
    with pytest.raises(UsageError, match=r"\[P, U, 3, H, W\]"):
        ctl.mse_matrix(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4))
    with pytest.raises(UsageError, match="same shape"):
        ctl.mse_matrix(torch.rand(2, 2, 3, 4, 4), torch.rand(2, 3, 3, 4, 4))
    with pytest.raises(UsageError, match="identical targets"):
        t = torch.rand(2, 1, 3, 4, 4).expand(-1, 3, -1, -1, -1)
        ctl.steering_score(ctl.mse_matrix(t, t), ctl.target_matrix(t))


def test_steering_ci_resamples_clusters_and_counts_them_once_with_two_draws():
    """Two reference draws of each photo are not two photos: clustered by photo, the CI and the
    count are those of one draw; treated as rows, the count doubles and the CI narrows."""
    from types import SimpleNamespace

    from piebench.diagnostics import steering_for

    x, tgt = _scene(3)
    out = _coupled(x, tgt, 0.4) + 0.05 * torch.randn(tgt.shape, generator=torch.Generator().manual_seed(1))
    d_out, d_tgt = ctl.mse_matrix(out, tgt), ctl.target_matrix(tgt)
    one = ctl.steering_score(d_out, d_tgt, seed=5)
    two_out, two_tgt = np.concatenate([d_out, d_out]), np.concatenate([d_tgt, d_tgt])  # draws 0 and 1
    photos = np.concatenate([np.arange(P), np.arange(P)])
    clustered = ctl.steering_score(two_out, two_tgt, clusters=photos, seed=5)
    assert clustered.score.n_clusters == P and clustered.score.n == 2 * P
    assert (clustered.score.lo, clustered.score.hi) == pytest.approx((one.score.lo, one.score.hi))
    naive = ctl.steering_score(two_out, two_tgt, seed=5)
    assert naive.score.n_clusters == 2 * P and naive.score.hi - naive.score.lo < 0.85 * (one.score.hi - one.score.lo)
    # in a run: groups of (photo, draw), photos 2k and 2k+1 crops of one scene -> P / 2 scenes
    result = SimpleNamespace(mse_out_tgt=two_out, mse_tgt_tgt=two_tgt, group_photos=photos)
    scenes = np.array([f"scene{p // 2}" for p in photos])
    got = steering_for(result, np.arange(U), seed=0, scenes=scenes)
    assert got["steering"]["n_scenes"] == P // 2
    assert got["steering"]["mean"] == pytest.approx(one.score.mean)
    with pytest.raises(UsageError, match="one id per row"):
        ctl.steering_score(d_out, d_tgt, clusters=[0, 1])
