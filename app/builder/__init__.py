"""The model builder: fastai-style CNNs and U-Nets from a recipe.

``recipe``, ``datasets`` (a recipe's dataset specs and their checks) and ``remedies`` (the
ladder's rungs as recipe changes) are plain data and import no torch (the architecture table
they read lives in ``app.advisor.architectures``); the torch parts load on first use, so the API
process reads and checks recipes without paying for torch.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.builder.cnn import BuiltModel, create_body
    from app.builder.head import create_head
    from app.builder.recipe import Recipe

__all__ = ["build_model", "create_body", "create_head"]


def build_model(recipe: "Recipe", n_out: int) -> "BuiltModel":
    """The recipe's model with ``n_out`` outputs (classes, or mask classes for segmentation).
    It carries its recipe and architecture name, which the client's callbacks report, so that a
    run trained from it can be verified."""
    model: BuiltModel
    if recipe.task == "segmentation":
        from app.builder.unet import build_segmenter

        model = build_segmenter(recipe, n_out)
    else:
        from app.builder.cnn import build_cnn

        model = build_cnn(recipe, n_out)
    model.recipe, model.arch = recipe, recipe.arch
    return model


def __getattr__(name: str) -> Any:
    if name == "create_body":
        from app.builder.cnn import create_body

        return create_body
    if name == "create_head":
        from app.builder.head import create_head

        return create_head
    raise AttributeError(f"module 'app.builder' has no attribute '{name}'")
