"""GAE against a hand-computed oracle (after Stable-Baselines3's tests/test_gae.py), and masked whitening."""

import pytest
import torch

from csrl.dialogue.trainer.gae import compute_gae, masked_mean, whiten


def oracle_gae(rewards, values, dones, last_value, gamma, lam):
    """The textbook definition, one step at a time: A_t = sum_k (gamma*lam)^k delta_{t+k} within the episode."""
    n = len(rewards)
    next_values = [*values[1:], last_value]
    deltas = [rewards[t] + gamma * next_values[t] * (1 - dones[t]) - values[t] for t in range(n)]
    advantages = []
    for t in range(n):
        total, discount = 0.0, 1.0
        for k in range(t, n):
            total += discount * deltas[k]
            if dones[k]:
                break
            discount *= gamma * lam
        advantages.append(total)
    return advantages, [a + v for a, v in zip(advantages, values, strict=True)]


EPISODE_ENDS = {
    "one-episode-bootstrapped": [0, 0, 0, 0, 0, 0],  # truncated: last_value bootstraps
    "one-episode-terminated": [0, 0, 0, 0, 0, 1],
    "two-episodes": [0, 0, 1, 0, 0, 1],
    "three-episodes": [0, 1, 0, 1, 0, 0],
    "every-step-ends": [1, 1, 1, 1, 1, 1],
}


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
@pytest.mark.parametrize("dones", list(EPISODE_ENDS.values()), ids=list(EPISODE_ENDS))
def test_matches_the_hand_computed_oracle(gamma, lam, dones):
    rewards = [0.0, 1.0, -0.5, 0.3, 0.0, 2.0]
    values = [0.2, 0.4, -0.1, 0.0, 0.5, 1.0]
    last_value = 0.7
    expected_adv, expected_ret = oracle_gae(rewards, values, dones, last_value, gamma, lam)
    advantages, returns = compute_gae(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(values, dtype=torch.float64),
        torch.tensor(dones),
        torch.tensor(last_value, dtype=torch.float64),
        gamma,
        lam,
    )
    torch.testing.assert_close(advantages, torch.tensor(expected_adv, dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor(expected_ret, dtype=torch.float64))


def test_hand_computed_numbers():
    # gamma=0.5, lam=0.5: delta = [1 + .5*2 - 1, 0 + .5*3 - 2, 1 - 3] = [1, -0.5, -2] (terminated at the end)
    # A2 = -2, A1 = -0.5 + .25 * -2 = -1, A0 = 1 + .25 * -1 = 0.75
    advantages, returns = compute_gae(
        torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]), 10.0, gamma=0.5, lam=0.5
    )
    assert advantages.tolist() == [0.75, -1.0, -2.0]
    assert returns.tolist() == [1.75, 1.0, 1.0]


def test_batched_rows_are_independent():
    rewards = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.5, 0.1]])
    dones = torch.tensor([[0, 0, 1], [0, 1, 0]])
    last_value = torch.tensor([5.0, 2.0])
    advantages, returns = compute_gae(rewards, values, dones, last_value, 0.9, 0.8)
    for row in range(2):
        a, r = compute_gae(rewards[row], values[row], dones[row], last_value[row], 0.9, 0.8)
        torch.testing.assert_close(advantages[row], a)
        torch.testing.assert_close(returns[row], r)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=1.5, lam=0.9), "gamma=1.5"),
        (dict(gamma=0.9, lam=-0.1), "lam=-0.1"),
    ],
)
def test_rejects_bad_coefficients(kwargs, match):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=match):
        compute_gae(x, x, x, 0.0, **kwargs)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        compute_gae(torch.zeros(3), torch.zeros(4), torch.zeros(3), 0.0, 1.0, 1.0)


def test_whiten_uses_only_masked_entries():
    x = torch.tensor([[1.0, 2.0, 3.0, 1000.0], [4.0, 5.0, -50.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = whiten(x, mask)
    selected = out[mask.bool()]
    assert abs(float(selected.mean())) < 1e-6
    assert abs(float(selected.std()) - 1.0) < 1e-5
    assert out[~mask.bool()].tolist() == [0.0, 0.0, 0.0]
    kept_mean = whiten(x, mask, shift_mean=False)[mask.bool()].mean()
    assert abs(float(kept_mean) - float(masked_mean(x, mask))) < 1e-5


def test_whiten_of_nothing_is_zero():
    assert whiten(torch.ones(3), torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
