"""Go/no-go: the runbook's success criteria, judged from what the run recorded.

Each criterion names the steps that show it. It is met when they all passed, met by hand when
a person ticked one in place of a missing integration, and not met when one failed, was
skipped or did not run. A criterion that names no step is not measured: a person judges it.
A must-have that is not met means No-Go; a should-have that is not met is a warning.
"""

from dataclasses import dataclass

from storage.models import StepRun, StepStatus

LEVELS = (
    ("must_have", "Must have"),
    ("should_have", "Should have"),
    ("nice_to_have", "Nice to have"),
)
MET, MET_BY_HAND, NOT_MET, NOT_MEASURED = "met", "met (checked by hand)", "not met", "not measured"


@dataclass(frozen=True)
class CriterionResult:
    level: str
    text: str
    outcome: str
    evidence: list[str]


@dataclass(frozen=True)
class Verdict:
    go: bool
    results: list[CriterionResult]

    @property
    def failed_must_haves(self) -> list[CriterionResult]:
        return [r for r in self.results if r.level == "must_have" and r.outcome == NOT_MET]

    @property
    def warnings(self) -> list[CriterionResult]:
        return [r for r in self.results if r.level == "should_have" and r.outcome == NOT_MET]


def evaluate(criteria, steps: list[StepRun]) -> Verdict:
    """Judge every criterion of ``criteria`` (a SuccessCriteria) against the step rows."""
    by_id = {step.step_id: step for step in steps}
    results = []
    for level, _ in LEVELS:
        for criterion in getattr(criteria, level):
            shown_by = [by_id[step_id] for step_id in criterion.steps if step_id in by_id]
            results.append(
                CriterionResult(
                    level=level,
                    text=criterion.text,
                    outcome=_outcome(shown_by),
                    evidence=[_evidence(step) for step in shown_by],
                )
            )
    go = not any(r.level == "must_have" and r.outcome == NOT_MET for r in results)
    return Verdict(go=go, results=results)


def report(verdict: Verdict) -> str:
    """Return the verdict as text for the step's output: each criterion with its evidence."""
    lines = ["GO" if verdict.go else "NO-GO"]
    for level, label in LEVELS:
        results = [r for r in verdict.results if r.level == level]
        if not results:
            continue
        lines.append(f"{label}:")
        for result in results:
            lines.append(f"- [{result.outcome}] {result.text}")
            lines += [f"    {line}" for line in result.evidence]
    return "\n".join(lines)


def _outcome(steps: list[StepRun]) -> str:
    if not steps:
        return NOT_MEASURED
    if any(step.status != StepStatus.PASSED for step in steps):
        return NOT_MET
    if any(step.manual_reason for step in steps):
        return MET_BY_HAND
    return MET


def _evidence(step: StepRun) -> str:
    output_lines = (step.output_tail or "").strip().splitlines()
    detail = step.error or (output_lines[0] if output_lines else "")
    if step.manual_reason and step.status == StepStatus.PASSED:
        detail = "ticked by hand"
    text = f"{step.title}: {step.status.value.replace('_', ' ')}"
    return f"{text} ({detail[:150]})" if detail else text
