"""The models floor's seams: the catalog knows no Model, the ImageNet labels are a leaf, bad preprocessing is a
ModelError (and still a ValueError), and a clamped channel range is a logged note."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from torch import nn

import deepvis.models.catalog as catalog
from deepvis.core.errors import ModelError, PreprocessingError
from deepvis.core.units import clamp_channels
from deepvis.models import Preprocessing, imagenet_labels, load_model
from deepvis.models.imagenet import imagenet_labels as leaf_labels


def test_the_catalog_imports_no_model():
    tree = ast.parse(Path(catalog.__file__).read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "deepvis.models.model" not in modules and "deepvis.models" not in modules


def test_the_catalog_is_built_from_a_network_and_its_settings():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    infos = catalog.build_catalog(net, 3, (8, 8), hidden_layers=["1"])
    assert [i.name for i in infos] == ["0", "1", "2", "3"]
    assert [i.name for i in infos if i.default] == ["3"]  # the ReLU is hidden
    assert catalog.find_layer(infos, "0").shape == (4, 6, 6)
    with pytest.raises(Exception, match="unknown layer '4'"):
        catalog.find_layer(infos, "4")
    model = load_model(net, input_size=(8, 8), mean=(0.0,), std=(1.0,))
    assert [i.name for i in model.layers()] == [i.name for i in infos]


def test_imagenet_labels_are_one_leaf():
    assert imagenet_labels is leaf_labels and len(leaf_labels()) == 1000 and leaf_labels()[0] == "tench"


def test_bad_preprocessing_is_a_model_error_and_a_value_error():
    with pytest.raises(PreprocessingError) as caught:
        Preprocessing(channel_order="grey")
    assert isinstance(caught.value, ModelError) and isinstance(caught.value, ValueError)
    with pytest.raises(ModelError, match="bad preprocessing for model .*std must not contain 0"):
        load_model(nn.Conv2d(3, 2, 3), std=(0.0,))


def test_a_clamped_channel_range_is_a_logged_note(caplog):
    with caplog.at_level(logging.WARNING, logger="deepvis.core.units"):
        assert clamp_channels(range(3, 10), 5, "fc", "crops") == [3, 4]
    assert caplog.messages == ["crops: note: layer 'fc' has 5 channels (0-4): doing 3-4 of 3-9"]
