"""Datasets read from files, loaded for real: every image decoded once before training (bad
files refused naming the file, or skipped and counted), kept as uint8 in memory, in the on-disk
cache or decoded again each epoch (the same pixels either way), and trained on: single-label,
multi-label (accuracy_multi, F-beta) and segmentation (IoU, Dice)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.builder import build_model
from app.builder.datasets import DataError, DataSpec, FileSpec, parse_spec
from app.builder.recipe import Recipe
from app.training import data as data_module
from app.training.augment import BatchAugmenter
from app.training.data import Images, decode_image, load, normalize
from app.training.loop import Metrics, TrainConfig, fit
from tests.builder.data_folders import (
    corrupt,
    image_csv,
    image_folder,
    mask,
    segmentation_folder,
)

CSV = {"kind": "image_csv", "path": "csvpets", "folder": "images", "image_size": 16}
MULTI = {**CSV, "path": "multi", "label_delim": " "}
SEG = {"kind": "segmentation_folder", "path": "camvid", "mask_suffix": "_P", "image_size": 16}


def spec(data: dict[str, Any]) -> DataSpec:
    parsed = parse_spec(data)
    assert isinstance(parsed, FileSpec)
    return parsed


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADVISOR_DATA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"
    image_folder(root, "pets", per_class=10)
    image_csv(root, "csvpets", n=24)
    image_csv(root, "multi", n=40, multi=True)
    segmentation_folder(root, "camvid", n=16)
    return root


def test_an_image_folder_loads_the_pixels_it_always_did(root: Path) -> None:
    split = load(spec({"kind": "image_folder", "path": "pets", "image_size": 12}), [root])
    assert isinstance(split.train_x, Images) and len(split.train_x) == 16
    assert len(split.valid_x) == 4 and split.n_out == 2 and split.task == "classification"
    x, y = split.train_x.fetch(torch.arange(3))
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 12, 12)
    # As the float loader made them: resized uint8, then (x / 255 - 0.45) / 0.25.
    file = split.train_x.items[int(split.train_x.rows[0])].file
    assert torch.equal(normalize(x[0]), (decode_image(file, 12).float() / 255 - 0.45) / 0.25)
    assert torch.equal(y, split.train_y[:3])


def test_the_three_stores_serve_the_same_batches(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In memory (within the budget), from the on-disk cache, and decoded each time."""
    batches = []
    for budget, cache_dir in (("512", None), ("0", None), ("0", "/proc/no-room")):
        monkeypatch.setenv("ADVISOR_DATA_CACHE_MB", budget)
        if cache_dir is not None:
            monkeypatch.setenv("ADVISOR_DATA_CACHE_DIR", cache_dir)
        split = load(spec(SEG), [root])
        x = split.train_x
        where = "memory" if x.pixels is not None else "disk" if x.cache is not None else "files"
        read = x.batches(pin=False)
        batches.append((where, list(read([torch.arange(5), torch.arange(5, 9)]))))
    assert [w for w, _ in batches] == ["memory", "disk", "files"]
    for _, other in batches[1:]:
        for (xa, ya), (xb, yb) in zip(batches[0][1], other, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_disk_cache_is_made_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVISOR_DATA_CACHE_MB", "0")
    first = load(spec(CSV), [root]).train_x
    assert first.cache is not None and first.cache.path.exists()
    made = first.cache.path.stat().st_mtime_ns
    again = load(spec(CSV), [root]).train_x
    assert again.cache is not None and again.cache.path == first.cache.path
    assert again.cache.path.stat().st_mtime_ns == made
    assert torch.equal(again[3][0], first[3][0])
    # A changed file is another dataset: another cache.
    corrupt(root / "csvpets" / "images" / "0.png")
    with pytest.raises(DataError, match="not a readable image"):
        load(spec(CSV), [root])


def test_worker_processes_read_the_batches(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVISOR_DATA_CACHE_MB", "0")
    monkeypatch.setenv("ADVISOR_DATA_WORKERS", "1")
    monkeypatch.setattr(data_module, "MIN_FOR_WORKERS", 1)
    x = load(spec(MULTI), [root]).train_x
    assert x.pixels is None
    read = x.batches(pin=False)
    for _ in range(2):  # the workers stay up from one epoch to the next
        got = list(read([torch.tensor([0, 1]), torch.tensor([2])]))
        assert [len(b[0]) for b in got] == [2, 1]
        assert torch.equal(got[1][0][0], x[2][0]) and torch.equal(got[0][1], x.labels[:2])


BAD: list[tuple[str, str, str]] = [
    ("corrupt image", "recipe.data.csv", "labels.csv line 7: '5.png': not a readable image"),
    ("mask of another size", "recipe.data.masks",
     "'images/5.png': its mask '5_P.png' is 8x8, the image 16x16"),
    ("pixel outside the codes", "recipe.data.codes",
     "'images/5.png': its mask '5_P.png' has pixel value 7, outside the codes (0 to 1)"),
]  # fmt: skip


def spoil(root: Path, case: str) -> dict[str, Any]:
    if case == "corrupt image":
        corrupt(root / "csvpets" / "images" / "5.png")
        return CSV
    values = np.zeros((8, 8) if case == "mask of another size" else (16, 16))
    values[0, 0] = 0 if case == "mask of another size" else 7
    mask(root / "camvid" / "labels" / "5_P.png", values)
    return SEG


@pytest.mark.parametrize(("case", "field", "reason"), BAD, ids=[c[0] for c in BAD])
def test_bad_files_are_refused_naming_them_or_skipped(
    root: Path, case: str, field: str, reason: str
) -> None:
    data = spoil(root, case)
    with pytest.raises(DataError) as err:
        load(spec(data), [root])
    assert err.value.field == field and err.value.reason.startswith(reason), err.value
    split = load(spec({**data, "skip_bad": True}), [root])
    assert len(split.skipped) == 1 and split.skipped[0].startswith(reason)
    assert len(split.train_x) + len(split.valid_x) == (23 if data is CSV else 15)


def test_a_fraction_keeps_a_subset_of_the_files(root: Path) -> None:
    full = load(spec(CSV), [root])
    part = load(spec(CSV), [root], fraction=0.5, seed=3)
    assert len(part.train_x) == round(len(full.train_x) * 0.5) and len(part.train_y) == len(
        part.train_x
    )
    assert set(part.train_x.rows.tolist()) <= set(full.train_x.rows.tolist())
    assert torch.equal(part.valid_x.rows, full.valid_x.rows)


def test_batch_augmentation_keeps_masks_classes() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    y = torch.randint(0, 3, (6, 16, 16))
    for kind in ("basic", "strong"):
        xa, ya = BatchAugmenter(kind, "segmentation")(x, y, normalize)
        assert xa.shape == (6, 3, 16, 16) and xa.dtype == torch.float32
        assert ya.shape == y.shape and set(torch.unique(ya).tolist()) <= {0, 1, 2}
        assert not torch.equal(xa, normalize(x))
    xa, ya = BatchAugmenter("none", "classification")(x, y[:, 0, 0], normalize)
    assert torch.equal(xa, normalize(x)) and torch.equal(ya, y[:, 0, 0])


def train(root: Path, data: dict[str, Any], **recipe: Any) -> list[dict[str, float]]:
    split = load(spec(data), [root])
    r = Recipe.model_validate(
        {"arch": "simple_cnn_small", "image_size": 16, "data": data, **recipe}
    )
    torch.manual_seed(0)
    model = build_model(r, split.n_out)
    config = TrainConfig(epochs=recipe.get("epochs", 6), lr=3e-3, weight_decay=0.0,
                         batch_size=8, augment=r.augment,
                         mixup=(r.mixup.kind, r.mixup.alpha) if r.mixup else None)  # fmt: skip
    results = fit(model, (split.train_x, split.train_y, split.valid_x, split.valid_y), config,
                  task=r.task, n_classes=split.n_out)  # fmt: skip
    return [r.metrics for r in results]


def test_single_label_files_train(root: Path) -> None:
    metrics = train(root, CSV, augment="basic")
    assert metrics[-1]["accuracy"] >= 0.8


def test_multi_label_trains_with_a_sigmoid_per_class(root: Path) -> None:
    metrics = train(root, MULTI, epochs=10, head={"ps": 0.0, "lin_ftrs": [32]})
    assert set(metrics[-1]) == {"accuracy_multi", "fbeta"}
    assert metrics[-1]["accuracy_multi"] > 0.9 and metrics[-1]["fbeta"] > 0.8
    # Mixup mixes several labels as they are.
    mixed = train(root, MULTI, epochs=2, mixup={"kind": "cutmix", "alpha": 0.4}, augment="strong")
    assert 0 <= mixed[-1]["accuracy_multi"] <= 1


def test_a_segmentation_folder_trains(root: Path) -> None:
    metrics = train(root, SEG, task="segmentation", arch="simple_cnn_small_bn", epochs=8)
    assert set(metrics[-1]) == {"iou", "dice"}
    assert metrics[-1]["iou"] > 0.5


def test_multi_label_metrics_by_hand() -> None:
    metrics = Metrics("multi_label", 3)
    logits = torch.tensor([[2.0, -1.0, 3.0], [-2.0, -2.0, -2.0]])
    metrics.update(logits, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    # Image 1 says {0, 2} of {0, 1}: one label right of three, F2 = 5 / (5 + 4 + 1). Image 2
    # says nothing of nothing: all right, F2 1.
    assert metrics.result() == pytest.approx({"accuracy_multi": 4 / 6, "fbeta": 0.75})
