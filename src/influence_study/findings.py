"""Findings: each paper finding as a measured statistic and a verdict, and the report that lists them.

Every analysis module writes its findings with :func:`finding`. A finding carries two sets of rules, both fixed in
code before the numbers they judge were seen:

- **v2** (the verdict the report leads with): :class:`IntervalCheck` s, each an estimate with its confidence interval
  (a bootstrap over queries) against the bound the paper's finding implies, plus the baseline the statistic must be
  read against (BM25 ranking, chance level, a control probe). A check is *supported* when its interval lies on the
  paper's side of the bound, *contradicted* when it lies wholly on the other side, *inconclusive* when it straddles
  the bound. The verdict (:func:`verdict_v2`) is *replicated* when every check is supported, *not replicated* when
  none is supported and at least one is contradicted, *inconclusive* when every check is inconclusive, *mixed*
  otherwise, and *not measured* without a measurable check.
- **v1** (kept for comparison): named booleans on point estimates; *replicated* when all hold, *not replicated* when
  none holds, *mixed* otherwise (:func:`verdict`).

:func:`write_findings_report` collects them into ``reports/findings.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

from influence_study.study.io import atomic_path, read_json

REPLICATED, NOT_REPLICATED, MIXED, NOT_MEASURED = "replicated", "not replicated", "mixed", "not measured"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPLICATED, NOT_REPLICATED, MIXED, INCONCLUSIVE, NOT_MEASURED)
# The status of one v2 check.
SUPPORTED, CONTRADICTED = "supported", "contradicted"
SIDES = ("above", "below", "within")


@dataclass
class IntervalCheck:
    """One pre-registered v2 check: ``estimate`` with its confidence interval ``[low, high]`` against ``bound``.

    ``side`` says where the paper's finding puts the interval: ``"above"`` or ``"below"`` the number ``bound``, or
    ``"within"`` the band ``bound = (lower, upper)``. :attr:`status` is ``supported`` when the whole interval is on
    that side (inside the band), ``contradicted`` when the whole interval is on the other side (outside the band),
    ``inconclusive`` otherwise, and ``not measured`` when the estimate or an end of the interval is not finite.
    """

    name: str
    estimate: float
    low: float
    high: float
    bound: float | tuple[float, float] = 0.0
    side: str = "above"

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"IntervalCheck {self.name!r}: side must be one of {SIDES}, got {self.side!r}")
        if self.side == "within":
            lower, upper = self.bound  # type: ignore[misc]
            self.bound = (float(lower), float(upper))
        else:
            self.bound = float(self.bound)  # type: ignore[arg-type]
        self.estimate, self.low, self.high = float(self.estimate), float(self.low), float(self.high)
        if all(map(math.isfinite, (self.low, self.high))) and self.low > self.high:
            raise ValueError(f"IntervalCheck {self.name!r}: low {self.low} > high {self.high}")

    @property
    def status(self) -> str:
        if not all(map(math.isfinite, (self.estimate, self.low, self.high))):
            return NOT_MEASURED
        if self.side == "above":
            bound = float(self.bound)  # type: ignore[arg-type]
            return SUPPORTED if self.low > bound else CONTRADICTED if self.high < bound else INCONCLUSIVE
        if self.side == "below":
            bound = float(self.bound)  # type: ignore[arg-type]
            return SUPPORTED if self.high < bound else CONTRADICTED if self.low > bound else INCONCLUSIVE
        lower, upper = self.bound  # type: ignore[misc]
        if lower <= self.low and self.high <= upper:
            return SUPPORTED
        return CONTRADICTED if self.high < lower or self.low > upper else INCONCLUSIVE

    def describe(self, fmt: str = "{:.3g}") -> str:
        """``"name: estimate [low, high] vs bound → status"``, for the report."""
        if self.side == "within":
            lower, upper = self.bound  # type: ignore[misc]
            target = f"in [{fmt.format(lower)}, {fmt.format(upper)}]"
        else:
            target = f"{'>' if self.side == 'above' else '<'} {fmt.format(self.bound)}"
        value = (f"{fmt.format(self.estimate)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"
                 if self.status != NOT_MEASURED else "not measured")
        return f"{self.name}: {value}, paper's side {target} → {self.status}"

    def to_dict(self) -> dict:
        bound = list(self.bound) if isinstance(self.bound, tuple) else self.bound
        return {"name": self.name, "estimate": self.estimate, "low": self.low, "high": self.high, "bound": bound,
                "side": self.side, "status": self.status}

    @classmethod
    def from_dict(cls, record: Mapping) -> "IntervalCheck":
        bound = record["bound"]
        return cls(record["name"], record["estimate"], record["low"], record["high"],
                   tuple(bound) if isinstance(bound, (list, tuple)) else bound, record["side"])


def verdict_v2(checks: Sequence[IntervalCheck]) -> str:
    """The v2 verdict of a finding from its interval checks (see the module docstring); checks that are not
    measured are ignored, and a finding with none left is ``not measured``."""
    statuses = [c.status for c in checks if c.status != NOT_MEASURED]
    if not statuses:
        return NOT_MEASURED
    if all(s == SUPPORTED for s in statuses):
        return REPLICATED
    if SUPPORTED not in statuses:
        return NOT_REPLICATED if CONTRADICTED in statuses else INCONCLUSIVE
    return MIXED


@dataclass
class Evidence:
    """The v2 part of a finding: the statistic with its interval (``statistic``, a sentence), what it is read
    against (``baseline``: BM25 ranking, chance level, control probe...) and the interval checks."""

    statistic: str
    baseline: str
    checks: Sequence[IntervalCheck] = ()


@dataclass
class Finding:
    """One finding of a paper, what was measured here and the verdict.

    ``checks`` maps the name of each pre-registered check (e.g. ``"exponent of every size in [2, 4.3]"``) to
    whether it held; ``verdict`` follows from them (see :func:`verdict`).
    """

    analysis: str
    claim: str
    paper: str
    measured: str
    checks: dict[str, bool] = field(default_factory=dict)
    verdict: str = NOT_MEASURED
    statistic: str = ""
    baseline: str = ""
    interval_checks: list[dict] = field(default_factory=list)
    verdict_v2: str = NOT_MEASURED

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(checks: Mapping[str, bool]) -> str:
    """``replicated`` when every check holds, ``not replicated`` when none does, ``mixed`` otherwise
    (``not measured`` without checks, e.g. when the study has too few models or queries for the statistic)."""
    if not checks:
        return NOT_MEASURED
    held = [bool(v) for v in checks.values()]
    return REPLICATED if all(held) else NOT_REPLICATED if not any(held) else MIXED


def finding(analysis: str, claim: str, paper: str, measured: str, checks: Mapping[str, bool],
            evidence: Evidence | None = None) -> Finding:
    """A :class:`Finding` whose v1 verdict is computed from ``checks`` and v2 verdict from ``evidence``'s interval
    checks (``not measured`` without evidence)."""
    checks = {str(k): bool(v) for k, v in checks.items()}
    item = Finding(analysis=analysis, claim=claim, paper=paper, measured=measured, checks=checks,
                   verdict=verdict(checks))
    if evidence is not None:
        item.statistic, item.baseline = evidence.statistic, evidence.baseline
        item.interval_checks = [c.to_dict() for c in evidence.checks]
        item.verdict_v2 = verdict_v2(list(evidence.checks))
    return item


def increasing(values: Sequence[float], tolerance: float = 0.0) -> bool:
    """Whether ``values`` (ordered by model size) end higher than they start and never fall by more than
    ``tolerance`` from one size to the next (a trend with scale, robust to one flat step)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return False
    return values[-1] > values[0] and all(b >= a - tolerance for a, b in zip(values, values[1:]))


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _v1_checks(item: Finding) -> str:
    return "; ".join(f"{'✓' if ok else '✗'} {name}" for name, ok in item.checks.items()) or "—"


def _v2_checks(item: Finding) -> str:
    return "; ".join(IntervalCheck.from_dict(c).describe() for c in item.interval_checks) or "—"


def _counts(findings: Sequence[Finding], attribute: str) -> str:
    counts = {v: sum(getattr(f, attribute) == v for f in findings) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "none"


def render_findings(findings: Iterable[Finding], title: str = "Findings", preamble: str = "") -> str:
    """The findings as markdown: the counts of v2 and v1 verdicts, one table per analysis (v2 statistic with its
    interval, baseline, paper's value, v2 verdict and checks, v1 verdict), then the v1 measurements and checks."""
    findings = list(findings)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += [f"Verdicts (v2, interval rules): {_counts(findings, 'verdict_v2')}.",
              f"Verdicts (v1, point rules, for comparison): {_counts(findings, 'verdict')}.", ""]
    for analysis in dict.fromkeys(f.analysis for f in findings):
        lines += [f"## {analysis}", "",
                  "| paper's finding | paper | statistic (95% CI) | baseline | verdict | checks (v2, fixed in code) "
                  "| v1 verdict |", "|---|---|---|---|---|---|---|"]
        lines += [_cells([f.claim, f.paper, f.statistic or "—", f.baseline or "—", f"**{f.verdict_v2}**",
                          _v2_checks(f), f.verdict]) for f in findings if f.analysis == analysis]
        lines.append("")
    lines += ["## v1: the previous rules' measurements and checks", "",
              "| analysis | paper's finding | measured here | v1 verdict | v1 checks |", "|---|---|---|---|---|"]
    lines += [_cells([f.analysis, f.claim, f.measured, f"**{f.verdict}**", _v1_checks(f)]) for f in findings]
    lines.append("")
    return "\n".join(lines)


def load_findings(summaries: Iterable[str]) -> list[Finding]:
    """The findings stored in analysis summary files (``analyses/{name}.json``, key ``findings``)."""
    items = []
    for path in summaries:
        for record in read_json(path).get("findings", []):
            items.append(Finding(**record))
    return items


def write_findings_report(summaries: Sequence[str], report: str, models: Sequence[str], caveat: str = "") -> None:
    """``reports/findings.md`` from every analysis summary; ``models`` are the names of the study's models. A
    ``caveat`` (e.g. that the run is a tiny configuration whose verdicts mean nothing) opens the report, in bold."""
    models = ", ".join(models)
    preamble = (f"**{caveat}**\n\n" if caveat else "") + (
        "Generated by the workflow from the analysis tables (`analyses/*.json`); do not edit by hand. Each verdict "
        "follows from the checks listed beside it, which were written in code (`src/influence_study/analyses/`) "
        "before the numbers were seen. v2 checks are estimates with 95% bootstrap intervals (over queries) against "
        "the bound the paper implies: *replicated* when every check's interval is on the paper's side, *not "
        "replicated* when none is and one is wholly on the other side, *inconclusive* when every interval straddles "
        "its bound, *mixed* otherwise. v1 (point estimates, no intervals) is kept for comparison. "
        f"Models: {models}. Sign: positive = adding the document raises log p(completion)."
    )
    text = render_findings(load_findings(summaries), title="Findings of the influence study", preamble=preamble)
    with atomic_path(report) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def findings_markdown(findings: Iterable[Mapping | Finding]) -> str:
    """A bullet list of findings (records of an ``analyses/{name}.json`` or :class:`Finding`), for notebooks."""
    lines = []
    for item in findings:
        item = item if isinstance(item, Finding) else Finding(**item)
        lines.append(f"- **{item.claim}** Paper: {item.paper}. Here: {item.statistic or item.measured}. "
                     f"Baseline: {item.baseline or '—'}. Verdict: *{item.verdict_v2}* ({_v2_checks(item)}); "
                     f"v1: *{item.verdict}* ({_v1_checks(item)}).")
    return "\n".join(lines)
