"""Every ladder rung as a change to a recipe. The ladder's own rung definitions decide both what
it recommends and what is applied here, so the two cannot disagree."""

from app.advisor.ladder import RUNG_BY_ID, Option, next_step
from app.builder.recipe import Recipe


class NotApplicable(ValueError):
    """The rung cannot change this recipe; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def apply_remedy(recipe: Recipe, rung: str, level: int | None = None) -> Recipe:
    """``recipe`` with ``rung`` applied at ``level`` (default: the level above the recipe's)."""
    if rung not in RUNG_BY_ID:
        raise ValueError(f"unknown rung '{rung}'")
    step = next_step(RUNG_BY_ID[rung], recipe.facts(), level)
    if not isinstance(step, Option):
        raise NotApplicable(step.reason)
    if not step.change:
        raise NotApplicable(f"{rung} needs something outside the recipe: {step.action}")
    return recipe.changed(step.change)
