"""Measure the bundled EfficientNet-Lite0's receptive fields and write the table it ships
(``src/deepvis/models/efficientnet_lite0_fields.json``; a test checks the table against a fresh measurement).

    python benchmarks/make_shipped_fields.py
"""

import json
from pathlib import Path

import deepvis.models.efficientnet_lite as efficientnet_lite
from deepvis import load_model
from deepvis.engine.receptive_field import receptive_fields

measured = load_model()
measured._fields.clear()
spatial = [i.name for i in measured.layers() if i.probeable and i.shape and len(i.shape) == 3]
fields = receptive_fields(measured, spatial)
table = {"input_size": list(measured.preprocessing.input_size), "max_input": 1024,
         "fields": {name: field.to_json() if field else None for name, field in fields.items()}}
out = Path(efficientnet_lite.__file__).with_name(efficientnet_lite.FIELDS_FILE)
out.write_text(json.dumps(table, indent=0, sort_keys=True), encoding="utf-8")
print(f"wrote {out}: {len(fields)} layers")
