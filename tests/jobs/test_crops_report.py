"""The crops job's frozen config and its report: what a run made and skipped, its notes (the library prints none),
and the one test of whether a unit's crops are current."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

import deepvis
from deepvis.jobs.crops import BATCH_ROWS, CropsConfig, CropsReport, is_current, make_crops, run_crops
from deepvis.jobs.crops.records import made_from
from deepvis.jobs.findmax import find_max
from deepvis.models.model import weights_hash

import zoo

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture
def scanned(tmp_path, noise_pngs):
    folder = noise_pngs
    torch.manual_seed(0)
    model = deepvis.load_model(zoo.ConvMeanFC(), input_size=(32, 32))
    return model, find_max(model, folder, tmp_path / "s", layers=["conv"], k=2, progress=False)


def test_a_run_reports_what_it_made_and_skipped_and_prints_nothing(scanned, capsys, caplog):
    model, store = scanned
    first = make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 2), progress=False)
    assert isinstance(first, CropsReport) and first.store.root == store.root
    assert (first.kinds, first.made, first.current, first.notes) == (("image", "guided"), 2, 0, [])
    assert first.layers["conv"].made == 2 and first.seconds >= 0
    with caplog.at_level(logging.INFO, logger="deepvis.jobs.crops"):
        again = make_crops(model, store.root, kinds=("image",), channels=range(0, 3), progress=False)
    assert (again.made, again.current) == (1, 2)  # channel 2 is new; 0 and 1 hold "image" from their top-k
    note = "crops: 2 of 3 units were already made from their current top-k (--force redoes them)"
    assert again.notes == [note] and note in caplog.messages
    assert capsys.readouterr() == ("", "")  # the command line prints the report, the library does not
    forced = run_crops(model, store.root, CropsConfig(kinds=("image",), channels=range(0, 1), force=True,
                                                      progress=False))
    assert (forced.made, forced.current, forced.notes) == (1, 0, [])


def test_the_config_is_frozen_and_holds_the_defaults():
    config = CropsConfig()
    assert (config.layers, config.kinds, config.channels, config.force, config.progress, config.batch_rows) == \
        (None, None, None, False, True, BATCH_ROWS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.force = True
    with pytest.raises(TypeError):
        make_crops(None, "nowhere", colour="red")  # a setting the config does not have


def test_current_crops_are_what_the_store_keeps_after_a_rescan(scanned):
    """One test of "current" in crops; the store's re-scan keeps exactly the units it calls current."""
    model, store = scanned
    make_crops(model, store.root, kinds=("image",), channels=range(0, 2), progress=False)
    manifest = store.read_manifest()
    basis = made_from(store, manifest, "conv", weights_hash(model))
    hashes = store.topk_hashes("conv")
    records = store.read_crops_records("conv", range(4))
    assert [is_current(records[c], hashes[c], basis) for c in range(4)] == [True, True, False, False]
    assert is_current(records[0], hashes[0], basis, ("image",)) and not is_current(records[0], hashes[0], basis,
                                                                                    ("image", "guided"))
    assert not is_current(records[0], hashes[1], basis) or hashes[0] == hashes[1]
    assert not is_current(records[0], hashes[0], {**basis, "network": "another"})
    assert store.invalidate(manifest)["crops"] == 0  # nothing current removed
    assert store.read_crops_record("conv", 0) == records[0]
