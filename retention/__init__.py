"""retention: enforce data-retention promises written as declarative YAML rules.

The data flows one way: YAML -> `Policy` (loader) -> `Plan` (planner) ->
execution (store adapters) -> audit. The public API is re-exported here.
"""

from retention.errors import ExitCode, Issue, PolicyError, RetentionError
from retention.loader import LoadedPolicy, load_policy, load_text
from retention.periods import Period, parse_period
from retention.planner import Plan, RulePlan, build_plan
from retention.policy import Policy, Rule

__all__ = [
    "ExitCode",
    "Issue",
    "LoadedPolicy",
    "Period",
    "Plan",
    "Policy",
    "PolicyError",
    "RetentionError",
    "Rule",
    "RulePlan",
    "build_plan",
    "load_policy",
    "load_text",
    "parse_period",
]
