"""aggregators/geometric_median.py on hand-made updates with known answers."""

from __future__ import annotations

import pytest
import torch

from psreval_tune.aggregators import AGGREGATORS, RoundContext, aggregate
from psreval_tune.config import ConfigError, CycleConfig


def _ctx(n: int, **params) -> RoundContext:
    weights = torch.full((n,), 1 / n, dtype=torch.float64)
    return RoundContext(1, torch.zeros(2, dtype=torch.float64), weights, 0, {"iters": 200, "nu": 1e-9, **params})


def test_symmetric_points_have_their_centre_as_median():
    square = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64) + 3.0
    assert torch.allclose(aggregate("geometric_median", square, _ctx(4)), torch.tensor([3.0, 3.0], dtype=torch.float64))


def test_far_outliers_move_it_by_a_bounded_amount():
    """5 honest updates at the corners of a unit square and its centre; 2 outliers at 1e6. The mean
    follows the outliers; the geometric median stays within the honest points' hull."""
    honest = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    for far in (1e3, 1e6):
        updates = torch.cat([honest, torch.full((2, 2), far, dtype=torch.float64)])
        got = aggregate("geometric_median", updates, _ctx(7))
        assert torch.all(got >= 0) and torch.all(got <= 1), got  # does not grow with the outliers' distance
        assert aggregate("fedavg", updates, _ctx(7)).min() > far / 4  # the mean does


def test_collinear_points_give_the_middle_one():
    """On a line the geometric median is the ordinary median: the middle of 3 points."""
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(aggregate("geometric_median", line, _ctx(3)), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_registered_with_its_defaults_and_checked_params():
    assert "geometric_median" in AGGREGATORS.names()
    assert CycleConfig(aggregation="geometric_median").aggregation_params == {"iters": 10, "nu": 1e-6}
    with pytest.raises(ConfigError, match="aggregation_params.iters=0"):
        CycleConfig(aggregation="geometric_median", aggregation_params={"iters": 0})
