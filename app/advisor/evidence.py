"""Evidence from past verifications: how each rung fared on runs like this one.

A run's :class:`Profile` is its task, its architecture family and its training-set size. Two runs
are :func:`similar` when task and family are the same and one training set is at most four times
the other. A run whose family or training-set size is unknown is similar to nothing: evidence is
only counted where it can be matched. :func:`gather` counts the verdicts of similar runs per rung
with their median effect; :func:`demoted` says when a rung's record is bad enough for the ladder
to try it after the next rung (at least three verdicts, none confirmed, most refuted).

The architecture family is the table's (``app.advisor.architectures.ARCHS[name].family``, so
resnet18 and resnet50 are both ``resnet``); a name not in the table stands for its own family:
lowercased, without trailing digits, dots, dashes and underscores (``ViT-B16`` -> ``vit-b``).

Pure: no SQL, HTTP or torch. The service reads the past verdicts and builds the profiles.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import median
from typing import Any

from app.advisor.architectures import ARCHS

SIZE_FACTOR = 4
MIN_VERDICTS = 3
VERDICTS = ("confirmed", "refuted", "inconclusive")
_TRAILING = re.compile(r"[\d._-]+$")


@dataclass(frozen=True, slots=True)
class Profile:
    """What makes two runs comparable; None where the run did not say."""

    task: str
    family: str | None
    n_train: int | None


def family_of(arch: str | None) -> str | None:
    """The architecture's family in the table, else the name without its size suffix."""
    if not arch:
        return None
    name = arch.strip().lower()
    meta = ARCHS.get(name)
    if meta is not None:
        return meta.family
    return _TRAILING.sub("", name) or name or None


def profile_of(task: str, arch: str | None, n_train: int | None) -> Profile:
    return Profile(task, family_of(arch), n_train if n_train and n_train > 0 else None)


def comparable(p: Profile) -> bool:
    """Whether ``p`` can be similar to anything (it names a family and a training-set size)."""
    return p.family is not None and p.n_train is not None


def similar(a: Profile, b: Profile) -> bool:
    """Same task, same family, training sets within a factor of four of each other (inclusive)."""
    if a.task != b.task or a.family is None or a.family != b.family:
        return False
    if a.n_train is None or b.n_train is None:
        return False
    small, large = sorted((a.n_train, b.n_train))
    return large <= SIZE_FACTOR * small


@dataclass(frozen=True, slots=True)
class PastVerdict:
    """One rung's verdict from a finished verification of the run ``run_id`` (its profile)."""

    rung: str
    verdict: str
    effect: float | None
    profile: Profile
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class RungEvidence:
    """Verdicts of one rung on similar runs: counts, median effect, how many distinct runs."""

    confirmed: int = 0
    refuted: int = 0
    inconclusive: int = 0
    median_effect: float | None = None
    runs: int = 0

    @property
    def total(self) -> int:
        return self.confirmed + self.refuted + self.inconclusive

    def to_dict(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "refuted": self.refuted,
            "inconclusive": self.inconclusive,
            "median_effect": self.median_effect,
            "similar_runs": self.runs,
        }

    def summary(self) -> str:
        """'2 confirmed, 1 refuted, 0 inconclusive on 3 similar runs (median effect +0.0310)'."""
        runs = f"{self.runs} similar run{'s' if self.runs != 1 else ''}"
        text = (
            f"{self.confirmed} confirmed, {self.refuted} refuted, {self.inconclusive} "
            f"inconclusive on {runs}"
        )
        if self.median_effect is not None:
            text += f" (median effect {self.median_effect:+.4f})"
        return text


def count(verdicts: Iterable[PastVerdict]) -> RungEvidence:
    """The record of one rung's verdicts; verdicts other than the three known are ignored."""
    tally = dict.fromkeys(VERDICTS, 0)
    effects: list[float] = []
    runs: set[int | None] = set()
    anonymous = 0
    for v in verdicts:
        if v.verdict not in tally:
            continue
        tally[v.verdict] += 1
        if v.effect is not None:
            effects.append(v.effect)
        if v.run_id is None:
            anonymous += 1
        else:
            runs.add(v.run_id)
    return RungEvidence(
        confirmed=tally["confirmed"],
        refuted=tally["refuted"],
        inconclusive=tally["inconclusive"],
        median_effect=median(effects) if effects else None,
        runs=len(runs) + anonymous,
    )


def gather(profile: Profile, past: Iterable[PastVerdict]) -> dict[str, RungEvidence]:
    """Per rung, the record of the verdicts of runs similar to ``profile``; rungs without any
    are absent."""
    by_rung: dict[str, list[PastVerdict]] = {}
    for v in past:
        if v.verdict in VERDICTS and similar(profile, v.profile):
            by_rung.setdefault(v.rung, []).append(v)
    return {rung: count(vs) for rung, vs in by_rung.items()}


def demoted(e: RungEvidence | None) -> str | None:
    """Why the ladder should try this rung after the next one, or None when it should not:
    at least three verdicts on similar runs, none confirmed, and most of them refuted."""
    if e is None or e.total < MIN_VERDICTS or e.confirmed or 2 * e.refuted <= e.total:
        return None
    why = f"refuted in {e.refuted} of {e.total} verifications on similar runs, confirmed in none"
    if e.median_effect is not None:
        why += f" (median effect {e.median_effect:+.4f})"
    return why


Evidence = Mapping[str, RungEvidence]
