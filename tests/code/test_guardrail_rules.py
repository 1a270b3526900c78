"""The guardrail's fallback rule, pure: a fallback must score no worse than the champion on
every metric a rule names (higher- and lower-is-better alike)."""

from keel.config.settings import load_settings
from keel.registry.guardrail import Score, no_worse


def _s(version, **metrics):
    return Score(version, {f"test/{k}": v for k, v in metrics.items()}, [], True)


def test_a_fallback_must_do_at_least_as_well_on_every_rule_metric(tmp_path):
    rules = {"test/roc_auc": {"min": 0.6}, "test/log_loss": {"max": 0.7}}
    s = load_settings(tmp_path, overrides={"guardrail.metrics": rules}, environ={})
    champion = _s("9", roc_auc=0.66, log_loss=0.60)
    assert no_worse(s.guardrail, _s("3", roc_auc=0.67, log_loss=0.60), champion)
    assert not no_worse(
        s.guardrail, _s("3", roc_auc=0.645, log_loss=0.55), champion
    )  # held only by promising less
    assert not no_worse(
        s.guardrail, _s("3", roc_auc=0.70, log_loss=0.61), champion
    )  # lower-is-better got worse
    assert no_worse(s.guardrail, _s("3", roc_auc=0.70, f1=0.1), champion)  # unruled metrics do not count
