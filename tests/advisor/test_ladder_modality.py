"""The ladder in each modality's terms: text, tabular, audio and time series rungs, where the
modality comes from (the report, the callbacks' facts, the architecture's name), the trainer's own
list of models, and skip reasons that quote the report's own values."""

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.advisor.architectures import ARCHS
from app.advisor.ladder import RUNGS, Facts, History, Recommendation, Step, recommend
from app.advisor.modal_remedies import REMEDIES
from app.advisor.modality import MODALITIES, modality_of_arch, named_sibling, resolve
from tests.conftest import overfit_epochs, overfitting_diagnosis

OVER = overfitting_diagnosis()

# What the transformers callback reports for a fine-tuned BERT: Hugging Face's model_type as the
# arch, no batch norm, BERT's 0.1 dropouts, the Trainer's default weight decay of 0.
BERT = Facts(
    arch="bert-base-uncased",
    batchnorm=False,
    head_dropout=0.1,
    body_dropout=0.1,
    weight_decay=0.0,
    more_data_available=False,
)
IMAGE_WORDS = ("crop", "flip", "rotation", "colour jitter", "erasing", "Dropout2d", "image")


def ladder(facts: Facts) -> dict[str, Step]:
    return {s.rung: s for s in recommend(OVER, facts).ladder}


def climb(facts: Facts) -> list[Recommendation]:
    """Every recommendation of a lineage that applies each in turn (the report unchanged)."""
    history, recs = History(), []
    while (rec := recommend(OVER, facts, history)).rung is not None:
        recs.append(rec)
        history = History(applied=history.applied | {rec.rung})
    return recs


def test_every_modality_has_as_many_levels_as_the_listed_rungs() -> None:
    """The ladder's listing (and next_step's level checks) count the image levels: every
    modality's row must have as many."""
    levels = {r.id.value: len(r.levels) for r in RUNGS}
    for modality, row in REMEDIES.items():
        if row.augment is not None:
            assert len(row.augment.values) == len(row.augment.actions) == levels["augment"]
        assert len(row.head.ps) == levels["dropout_head"], modality
        assert len(row.body.levels) == levels["dropout_body"], modality
        # Ascending, so a level is the highest step a value reaches.
        assert list(row.head.ps) == sorted(row.head.ps)
        assert [p for p, _ in row.body.levels] == sorted(p for p, _ in row.body.levels)
    assert set(REMEDIES) == set(MODALITIES)


def test_a_text_bert_run_speaks_text() -> None:
    """Token masking, no Mixup, no batch norm (layer norm, said so), classifier dropout, hidden
    and attention dropout with weight decay, and DistilBERT last; never an image word."""
    recs = climb(BERT)
    assert [r.rung for r in recs] == ["augment", "dropout_head", "dropout_body", "smaller_model"]
    augment, head, body, smaller = recs
    assert augment.change == {"token_mask": 0.1}
    assert "back-translat" in augment.action and "Mask 10%" in augment.action
    assert head.change == {"classifier_dropout": 0.2}
    assert (
        head.action == "Raise dropout from p=0.1 to p=0.2 in the classifier (classifier_dropout)."
    )
    assert body.change == {
        "hidden_dropout_prob": 0.15,
        "attention_probs_dropout_prob": 0.15,
        "weight_decay": 0.01,
    }
    assert "from p=0.1 to p=0.15" in body.action and "add weight decay 0.01" in body.action
    assert smaller.change == {"arch": "distilbert-base-uncased"}
    for rec in recs:
        said = " ".join([rec.action, rec.rationale, *(s.reason for s in rec.ladder)])
        assert not any(w in said for w in IMAGE_WORDS), (rec.rung, said)
        assert "batch norm" not in rec.action.lower()
    steps = ladder(BERT)
    assert steps["batchnorm"].status == "skipped"
    assert "already normalizes with layer norm" in steps["batchnorm"].reason
    assert steps["mixup"].status == "skipped" and "token sequences" in steps["mixup"].reason


def test_text_batch_norm_is_skipped_whatever_the_model_and_its_stronger_levels() -> None:
    lstm = Facts(arch="my_lstm", modality="text", more_data_available=False, augment="strong")
    steps = ladder(lstm)
    assert steps["batchnorm"].status == "skipped" and "layer norm" in steps["batchnorm"].reason
    assert "transformer" not in steps["batchnorm"].reason.split("(")[0]  # not said of an LSTM
    # Confirmed rungs go one level stronger, in text's own keys.
    confirmed = History(
        applied=frozenset({"dropout_head", "dropout_body"}),
        confirmed=frozenset({"dropout_head", "dropout_body"}),
    )
    stronger = replace(BERT, head_dropout=0.2, body_dropout=0.15, weight_decay=0.01,
                       augment="strong")  # fmt: skip
    rec = recommend(OVER, stronger, confirmed)
    assert rec.rung == "dropout_head" and rec.change == {"classifier_dropout": 0.3}
    assert rec.alternatives[0].change == {
        "hidden_dropout_prob": 0.2,
        "attention_probs_dropout_prob": 0.2,
        "weight_decay": 0.05,
    }


@pytest.mark.parametrize(
    ("arch", "smaller"),
    [
        ("bert-large-uncased", "bert-base-uncased"),
        ("google-bert/bert-base-uncased", "distilbert-base-uncased"),
        ("roberta-base", "distilroberta-base"),
        ("gpt2-medium", "gpt2"),
        ("gpt2", "distilgpt2"),
        ("t5-base", "t5-small"),
    ],
)
def test_a_smaller_text_model_is_distilled_or_has_fewer_layers(arch: str, smaller: str) -> None:
    assert named_sibling(arch, -1) == smaller
    saturated = Facts(arch=arch, head_dropout=0.3, body_dropout=0.2, augment="strong",
                      more_data_available=False)  # fmt: skip
    rec = recommend(OVER, saturated)
    assert rec.rung == "smaller_model" and rec.change == {"arch": smaller}


def test_the_smallest_text_model_and_a_bare_family_name() -> None:
    done = Facts(arch="distilgpt2", head_dropout=0.3, body_dropout=0.2, augment="strong",
                 more_data_available=False)  # fmt: skip
    rec = recommend(OVER, done)
    assert rec.rung is None
    assert (
        ladder(done)["smaller_model"].reason == "distilgpt2 is already the smallest of its family"
    )
    # Hugging Face's model_type says the family, not the checkpoint: no change is guessed, the
    # family's sizes are named.
    family = recommend(OVER, replace(done, arch="bert"))
    assert family.rung == "smaller_model" and family.change == {}
    assert "distilled or fewer-layer version of bert" in family.action
    assert "distilbert-base-uncased, bert-base-uncased, bert-large-uncased" in family.action


def test_tabular_data_is_never_offered_image_augmentation() -> None:
    rows = Facts(arch="TabularModel", batchnorm=False, more_data_available=False)
    recs = climb(rows)
    assert [r.rung for r in recs] == [
        "mixup",
        "batchnorm",
        "dropout_head",
        "dropout_body",
        "smaller_model",
    ]
    mixup, batchnorm, head, body, smaller = recs
    assert mixup.change == {"mixup": {"kind": "mixup", "alpha": 0.2}}
    assert "pairs of rows" in mixup.rationale
    assert batchnorm.change == {"batchnorm": True}
    assert head.change == {"head_dropout": 0.1}
    assert body.change == {"body_dropout": 0.1, "weight_decay": 0.05}
    assert "between the hidden layers" in body.action
    assert smaller.change == {} and "fewer or narrower hidden layers" in smaller.action
    augment = ladder(rows)["augment"]
    assert augment.status == "skipped"
    assert augment.reason.startswith("tabular rows have no label-preserving transforms")
    for rec in recs:
        assert "augment" not in rec.change
        assert not any(w in rec.action for w in IMAGE_WORDS)


@pytest.mark.parametrize(
    ("modality", "words"),
    [
        ("audio", ("SpecAugment", "frequenc", "noise")),
        ("time_series", ("jitter", "scaling", "window warping")),
        ("image", ("crop", "flip")),
    ],
)
def test_augmentation_in_each_modality_keeps_the_augment_key(
    modality: str, words: tuple[str, ...]
) -> None:
    facts = Facts(arch="net", modality=modality, more_data_available=False)
    basic = recommend(OVER, facts)
    assert basic.rung == "augment" and basic.change == {"augment": "basic"}
    assert all(w in basic.action for w in words[:2]), basic.action
    strong = recommend(OVER, Facts(arch="net", modality=modality, more_data_available=False,
                                   augment="basic"))  # fmt: skip
    assert (
        "already in the recipe (basic)"
        in ladder(Facts(arch="net", modality=modality, more_data_available=False, augment="basic"))[
            "augment"
        ].reason
    )
    assert strong.rung == "mixup"
    # The rest is the image model's: its keys, so the builder and the knobs read them alike.
    assert ladder(facts)["dropout_head"].reason.endswith("p=0.25 in the last layers (head).")


def test_the_image_ladder_is_unchanged() -> None:
    facts = Facts(arch="resnet34", more_data_available=False)
    assert resolve(None, "resnet34") == "image" == resolve(None, None) == resolve(None, "net")
    recs = climb(facts)
    assert [(r.rung, r.change) for r in recs] == [
        ("augment", {"augment": "basic"}),
        ("mixup", {"mixup": {"kind": "mixup", "alpha": 0.2}}),
        ("dropout_head", {"head.ps": 0.25}),
        ("dropout_body", {"body_dropout": 0.1, "weight_decay": 0.05}),
        ("smaller_model", {"arch": "resnet18"}),
    ]
    assert recs[0].action == (
        "Use basic data augmentation (random resized crop, horizontal flip, small rotation)."
    )


# --- where the modality comes from -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "modality"),
    [
        ("bert-base-uncased", "text"),
        ("bert", "text"),  # Hugging Face's model_type
        ("BertForSequenceClassification", "text"),
        ("DistilBertForSequenceClassification", "text"),
        ("roberta-base", "text"),
        ("GPT2LMHeadModel", "text"),
        ("t5-small", "text"),
        ("FacebookAI/xlm-roberta-base", "text"),
        ("resnet50", "image"),
        ("ResNet", "image"),  # torchvision's class
        ("vit_b_16", "image"),
        ("ViTForImageClassification", "image"),
        ("convnext_tiny", "image"),
        ("efficientnet_b3", "image"),
        ("wav2vec2-base", "audio"),
        ("Wav2Vec2ForSequenceClassification", "audio"),
        ("openai/whisper-small", "audio"),
        ("hubert", "audio"),
        ("TabularModel", "tabular"),  # fastai's tabular_learner
        ("PatchTSTForPrediction", "time_series"),
        ("vits", None),  # a speech model, not a vit
        ("DigitsNet", None),
        ("Sequential", None),
        (None, None),
    ],
)
def test_modality_from_the_architectures_name(arch: str | None, modality: str | None) -> None:
    assert modality_of_arch(arch) == modality


def test_the_report_and_the_callbacks_modality_win_over_the_name() -> None:
    assert resolve("tabular", "bert") == "tabular"
    assert resolve("nonsense", "bert") == "text"
    assert all(modality_of_arch(name) == "image" for name in ARCHS)
    # A declared modality beats the name: a ResNet on spectrograms is offered SpecAugment.
    rec = recommend(OVER, Facts(arch="resnet18", modality="audio", more_data_available=False))
    assert "SpecAugment" in rec.action


def post(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/runs", json={"epochs": overfit_epochs(), **body})
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def test_modality_through_the_api(client: TestClient) -> None:
    """A report's data.modality, a callback's model.modality and the arch's name each make the
    stored recommendation speak the modality; a bad modality is refused naming the field."""
    said = post(client, name="rows", model={"arch": "my_mlp", "batchnorm": True},
                data={"modality": "tabular", "more_data_available": False})  # fmt: skip
    assert said["recommendation"]["rung"] == "mixup"
    steps = {s["rung"]: s for s in said["recommendation"]["ladder"]}
    assert steps["augment"]["status"] == "skipped"
    assert "tabular rows" in steps["augment"]["reason"]
    fetched = client.get(f"/api/v1/runs/{said['id']}").json()
    assert fetched["data"]["modality"] == "tabular"

    named = post(client, name="bert", model={"arch": "bert-base-uncased", "head_dropout": 0.1},
                 data={"more_data_available": False})  # fmt: skip
    assert named["recommendation"]["change"] == {"token_mask": 0.1}
    steps = {s["rung"]: s for s in named["recommendation"]["ladder"]}
    assert "layer norm" in steps["batchnorm"]["reason"]
    assert steps["dropout_head"]["reason"].startswith("Raise dropout from p=0.1 to p=0.2")

    found = post(client, name="found", model={"arch": "DigitsNet", "modality": "text"},
                 data={"more_data_available": False})  # fmt: skip
    assert found["recommendation"]["change"] == {"token_mask": 0.1}

    r = client.post(
        "/api/v1/runs", json={"epochs": overfit_epochs(), "data": {"modality": "video"}}
    )
    assert r.status_code == 422 and "modality" in r.text
