"""The modality the callbacks find from a model's classes: a Hugging Face model's input name, the
package a module's class lives in; nothing from plain torch layers."""

from typing import Any

import pytest
from overfit_advisor.facts import modality_of, torch_model_facts


def module(cls_name: str, package: str, **attrs: Any) -> object:
    """An instance of a class named ``cls_name`` defined in ``package``, as a framework's is."""
    return type(cls_name, (), {"__module__": package, **attrs})()


@pytest.mark.parametrize(
    ("found", "modality"),
    [
        (module("BertForSequenceClassification", "transformers.models.bert.modeling_bert",
                main_input_name="input_ids"), "text"),
        (module("ViTForImageClassification", "transformers.models.vit.modeling_vit",
                main_input_name="pixel_values"), "image"),
        (module("Wav2Vec2ForCTC", "transformers.models.wav2vec2.modeling_wav2vec2",
                main_input_name="input_values"), "audio"),
        (module("WhisperForConditionalGeneration", "transformers.models.whisper",
                main_input_name="input_features"), "audio"),
        (module("PatchTSTForPrediction", "transformers.models.patchtst",
                main_input_name="past_values"), "time_series"),
        (module("ResNet", "torchvision.models.resnet"), "image"),
        (module("VisionTransformer", "timm.models.vision_transformer"), "image"),
        (module("TabularModel", "fastai.tabular.model"), "tabular"),
        (module("AWD_LSTM", "fastai.text.models.awdlstm"), "text"),
        (module("Linear", "torch.nn.modules.linear"), None),
        (module("DigitsNet", "__main__"), None),
    ],
)  # fmt: skip
def test_the_modality_a_class_makes_plain(found: object, modality: str | None) -> None:
    assert modality_of([found]) == modality


def test_the_outermost_module_that_says_wins_and_plain_layers_say_nothing() -> None:
    """A user's module wrapping a text model is a text model, whatever layers come first."""
    wrapper = module("Classifier", "__main__")
    linear = module("Linear", "torch.nn.modules.linear")
    bert = module("BertModel", "transformers.models.bert", main_input_name="input_ids")
    assert modality_of([wrapper, linear, bert]) == "text"
    assert modality_of([wrapper, linear]) is None
    assert modality_of([]) is None


def test_real_models_report_their_modality_with_their_facts() -> None:
    """torchvision's ResNet and a Hugging Face BERT, built for real: the model facts carry the
    modality; a Linear alone carries none (the service reads the arch instead)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    transformers = pytest.importorskip("transformers")

    resnet = torchvision.models.resnet18(weights=None, num_classes=3)
    assert torch_model_facts(resnet)["modality"] == "image"
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=3,
    )  # fmt: skip
    bert = torch_model_facts(transformers.BertForSequenceClassification(config))
    assert bert["modality"] == "text" and bert["arch"] == "BertForSequenceClassification"
    plain = torch_model_facts(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    assert "modality" not in plain


def test_plain_torch_models_report_what_their_layers_make_plain() -> None:
    """A user's own modules, built from plain torch layers: token embeddings read by an LSTM
    are a text model (the ladder's default, image, would advise crops and flips), 2-D
    convolutions an image model; embeddings fed to a Linear (a tabular model's categories)
    and a Linear alone say nothing."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    # A user's modules, as their layers (forward() does not matter to what they are).
    text = nn.ModuleDict(
        {"embed": nn.Embedding(100, 8), "lstm": nn.LSTM(8, 8), "head": nn.Linear(8, 2)}
    )
    categories = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(7, 1)})
    assert torch_model_facts(text)["modality"] == "text"
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    assert torch_model_facts(cnn)["modality"] == "image"
    assert "modality" not in torch_model_facts(categories)
