"""The client sends JSON's own types, which the service takes strictly (issue 17): numpy's and
torch's scalars, anywhere in a report or a verification request, go out as the Python numbers
and booleans they hold, against a real server process."""

import numpy as np
import torch
from overfit_advisor import Client

from tests.conftest import overfit_epochs
from tests.worker.test_verification_api import RECIPE


def test_numpy_and_torch_scalars_go_out_as_json_numbers_and_booleans(server: str) -> None:
    epochs = [
        {**e, "epoch": np.int64(e["epoch"]), "valid_loss": np.float32(e["valid_loss"])}
        for e in overfit_epochs(8)
    ]
    with Client(server) as client:
        run = client.report(
            "numpy-facts",
            epochs,
            model={"batchnorm": np.bool_(True), "head_dropout": torch.tensor(0.25)},
            data={"n_train": np.int64(1438), "sizes": [np.int32(3), np.float16(0.5)]},
            constraints={"time_limited": np.bool_(False)},
            recipe={**RECIPE, "epochs": np.int64(2)},
            params={"seed": np.uint8(7), "lr": np.float32(0.5)},
        )
        more = [{"epoch": np.int64(8), "train_loss": np.float64(0.1), "valid_loss": 0.9}]
        run = client.log_epochs(run.id, more)
        job = client.verify(
            run.id, rung="augment", seeds=np.arange(3), epochs=np.int64(1), min_seeds=np.int8(2)
        )
        client.cancel(job.id)  # what it was asked for is all this test reads
    assert run.n_epochs == 9
    assert [e["epoch"] for e in run.epochs] == list(range(9))
    assert run.raw["model"] == {"batchnorm": True, "head_dropout": 0.25}
    assert run.raw["data"] == {"n_train": 1438, "sizes": [3, 0.5]}
    assert run.raw["constraints"]["time_limited"] is False
    assert run.raw["recipe"]["epochs"] == 2
    assert run.raw["params"] == {"seed": 7, "lr": 0.5}
    assert (job.raw["seeds"], job.raw["epochs"]) == ([0, 1, 2], 1)
    assert job.raw["protocol"]["min_seeds"] == 2
