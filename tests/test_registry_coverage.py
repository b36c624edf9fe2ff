"""Every name in the aggregation, threat and attack registries is accepted by the config and reported
by analysis: a name forgotten somewhere would silently drop from every report (issue 13). No training:
the trials are synthetic rows whose numbers only need to exist."""

from __future__ import annotations

import pandas as pd
import pytest

from psreval_tune.aggregators import AGGREGATORS
from psreval_tune.analysis.load import flatten_config, tidy
from psreval_tune.analysis.reports import present_attacks
from psreval_tune.analysis.reports.robustness import robustness_tables
from psreval_tune.attacks import ATTACKS
from psreval_tune.config import CycleConfig
from psreval_tune.threats import THREATS

# threats whose strength is a share of poisoned data have their own reports (adv_training, train_time)
ROBUSTNESS_THREATS = [e.name for e in THREATS if e.kind != "none" and not e.needs_fraction]


def _trials(aggregations, threats) -> pd.DataFrame:
    rows = []
    for agg in aggregations:
        for threat in ["none", *threats]:
            for seed in (0, 1):
                cfg = CycleConfig(aggregation=agg, threat=threat, num_clients=10, num_malicious=3, seed=seed)
                row = {
                    **flatten_config(cfg.to_dict()),
                    "sweep": "s",
                    "trial_id": f"{agg}-{threat}-{seed}",
                    "run_id": None,
                }
                row.update(source="test", run_name="r", acc_clean_float=0.9 - 0.01 * seed, n_test=360)
                if THREATS.get(threat).meta.get("asr"):
                    row.update(asr_float=0.5 + 0.01 * seed, n_asr=320)
                rows.append(row)
    return tidy(rows)


@pytest.mark.parametrize("agg", AGGREGATORS.names())
def test_every_aggregator_is_accepted_and_reported(agg):
    assert CycleConfig(aggregation=agg).aggregation == agg
    rep = robustness_tables(_trials(["fedavg", agg] if agg != "fedavg" else ["fedavg", "median"], ["sign_flip"]))
    assert agg in set(rep.data["aggregator"])


@pytest.mark.parametrize("threat", ROBUSTNESS_THREATS)
def test_every_threat_is_accepted_and_reported(threat):
    assert CycleConfig(threat=threat, num_clients=10, num_malicious=3).threat == threat
    rep = robustness_tables(_trials(["fedavg", "median"], [threat]))
    reported = rep.data[rep.data["threat"] == threat]
    assert len(reported) and set(reported["adversaries"]) == {3}
    if THREATS.get(threat).meta.get("asr"):
        assert (reported["metric"] == "asr").any()


def test_mapping_params_become_dotted_columns_not_config_fields():
    """ipm's threat_params {epsilon: 4.0} must not overwrite the DP epsilon when a Tune config is read."""
    cfg = CycleConfig(threat="ipm", num_clients=10, num_malicious=3, threat_params={"epsilon": 4.0})
    flat = flatten_config({"setting": {"threat": "ipm", "threat_params": cfg.threat_params}, "epsilon": None})
    assert flat == {"threat": "ipm", "threat_params.epsilon": 4.0, "epsilon": None}


@pytest.mark.parametrize("attack", ATTACKS.names())
def test_every_attack_is_accepted_and_reported(attack):
    assert CycleConfig(eval_attacks=(attack,)).eval_attacks == (attack,)
    frame = pd.DataFrame({f"acc_wb_{a.lower()}_mean": [0.5] for a in ATTACKS.names()})
    assert attack in present_attacks(frame, "acc_wb_{a}_mean")
