"""The reward-kind plug-in contract and its registry, keyed by a space's `reward.kind`.

A reward kind is how a search turns a policy into a reward. It says what it refuses in a request
(`check`), what it trains or prepares once per search before any trial (`prepare`: density
matching's fold models), how one trial scores a policy (`trial`, a function without Ray that the
Tune adapter runs in its trainable), what it proposes and exports after the search besides the
trials (`propose`, `export`: density matching's merged policy), and what it adds to the dry
run's summary, the exported provenance, the diagnostics and MLflow. The session, the outputs,
the dry run, the diagnostics and the tracking ask the kind; none of them names one. A new kind
is one module that subclasses `RewardKind` and calls `register_reward_kind` (in the manner of
timm's model registry and Ray Tune's searcher registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from search.errors import SearchError
from search.registry import Registry
from search.trials.config import TrialConfig, encode
from spaces.policy import Policy, policy_to_dict
from spaces.schema import Space

# A trial without Ray: trial(config, ctx, splits, report, restored=None, **shared), calling
# report(metrics, checkpoint or None) once per epoch (or once); see search.trials.trial.
TrialFn = Callable[..., Any]


@dataclass(frozen=True)
class Proposal:
    """A policy a reward kind proposes after the search that no trial trained as it is (density
    matching's merge of the best trials). `chosen`: the kind's answer, exported when nothing is
    confirmed and confirmed before the best trials; otherwise only written beside them."""

    key: str  # its name as a confirmation candidate and in the outputs ("merged")
    policy: Policy
    chosen: bool
    text: str = ""  # what it is, in words (the summary of an unconfirmed search)

    def config(self) -> dict[str, Any]:
        """A trial config naming it explicitly (it is no point of the searched space)."""
        return encode(TrialConfig(policy=policy_to_dict(self.policy)))


class RewardKind:
    """A way to score a policy. The defaults describe a kind whose trial trains a child."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # How one trial scores a policy, without Ray (set as `trial = staticmethod(fn)`).
    trial: ClassVar[TrialFn]
    # A trial trains a child over epochs with checkpoints: PBT, ASHA and cohorts can act on it,
    # and its reward is a child's (confirm.csv keeps it as the selecting replicate).
    child_per_trial: ClassVar[bool] = True
    trial_words: ClassVar[str] = "one report"  # a trial in words when it trains no child

    # ------------------------------------------------------------ the request

    def check(self, space: Space, strategy: Any, opts: Any) -> None:
        """Refuse, naming the flag, what this kind cannot search with: a kind that trains no
        child per trial has nothing for PBT to evolve and no epochs for ASHA to stop."""
        if self.child_per_trial:
            return
        label = self.name.replace("_", " ")
        if strategy.population_based:
            from search.strategies import get_strategy, strategy_names

            usable = [n for n in strategy_names() if not get_strategy(n).population_based]
            raise SearchError(f"--searcher {strategy.name} cannot search with reward.kind: "
                              f"{self.name} (space {space.name}): it changes policies while a "
                              f"child trains, and {label} trains none per trial; use "
                              f"--searcher {' or '.join(usable)}, or reward.kind: "
                              f"child_training")
        if opts.early_stop:
            raise SearchError(f"--early-stop {opts.early_stop} has nothing to stop with "
                              f"reward.kind: {self.name} (a trial is {self.trial_words}, without "
                              f"epochs); drop --early-stop")

    # ------------------------------------------------------------ before the search

    def prepare(self, plan: Any, tracker: Any, output: Path, resume: bool) -> Any:
        """What the kind trains or prepares once per search, and the search's Tune plan
        (`search.tune.TunePlan`) that uses it, its trials running `trial`; None when that
        stage was interrupted."""
        return replace(plan, trial=self.trial)

    def confirmation(self, plan: Any) -> Any:
        """The Tune plan the confirmation retrains its candidates with: the kind's own trial
        where a trial trains a model (`child_per_trial`: fresh replicates measure what the
        search's reward measured), else real children (`search.trials.trial.run_child`)."""
        return replace(plan, trial=self.trial) if self.child_per_trial else plan

    def resumable(self, output: Path) -> bool:
        """An interrupted search in `output` left state of this kind's own stage to resume."""
        return False

    # ------------------------------------------------------------ one trial

    def trial_epochs(self, space: Space) -> int:
        """The epochs a finished trial has reported."""
        return space.child.epochs

    # ------------------------------------------------------------ after the search

    def propose(self, space: Space, outcomes: list[Any]) -> Proposal | None:
        """A policy to propose besides the trials (None: the best trials speak for themselves)."""
        return None

    def export(self, space: Space, proposal: Proposal | None, output: Path) -> dict[str, Path]:
        """Files the kind writes beside the exported policy, by name."""
        return {}

    def result_notes(self, space: Space, output: Path) -> tuple[list[str], dict[str, float]]:
        """Lines the kind adds to the search's summary and metrics it adds to the parent MLflow
        run, from what its stages left in `output` (none by default)."""
        return [], {}

    # ------------------------------------------------------------ what it adds to the records

    def summary_lines(self, space: Space) -> list[str]:
        """The dry run's lines on how a trial's reward is measured."""
        return [f"  reward    {self.name}: {self.summary}"]

    def proposal_text(self, space: Space) -> str | None:
        """The dry run's name of what the kind proposes for export (None: the best trial)."""
        return None

    def params(self, space: Space) -> dict[str, Any]:
        """MLflow params of the search's parent run besides `reward_kind`."""
        return {}

    def provenance(self, space: Space) -> dict[str, Any]:
        """Fields every policy this search writes carries in its provenance."""
        return {"reward_kind": self.name}

    def accuracy_reward(self, space: Space) -> bool:
        """The reward is an accuracy, like the audit accuracy it is compared with (the
        diagnostics' selection gap means nothing otherwise)."""
        return True


_KINDS: Registry[RewardKind] = Registry("reward kind", "reward.kind")


def register_reward_kind(kind: RewardKind, *, replace: bool = False) -> RewardKind:
    """Add a reward kind to the registry under `kind.name` (a plug-in calls this when
    imported); a name already taken is refused unless `replace`."""
    return _KINDS.register(kind.name, kind, replace=replace)


unregister_reward_kind = _KINDS.unregister
reward_kind_names = _KINDS.names
get_reward_kind = _KINDS.get


def reward_kind(space: Space) -> RewardKind:
    """The reward kind a space names (`reward.kind`)."""
    return get_reward_kind(space.reward.kind)
