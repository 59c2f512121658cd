"""The commands of ``deepvis``: name -> the module that adds its parser and runs it, and its one-line summary.

Only the command named on the line is imported (``deepvis --help`` and ``deepvis layers`` load neither the server
stack nor the other commands' libraries); the summaries list the others in ``deepvis --help``."""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "predict": Command("deepvis.apps.cli.predict", "top-k class predictions for images"),
    "layers": Command("deepvis.apps.cli.layers", "the model's layers, shapes and flags"),
    "backprop": Command("deepvis.apps.cli.backprop",
                        "gradient / deconv / guided-backprop image of a unit with respect to the input"),
    "attention": Command("deepvis.apps.cli.attention",
                         "what a token of a vision transformer attends to, or its attention rollout, over the image"),
    "attribute": Command("deepvis.apps.cli.attribute",
                         "attribution maps of a unit (Grad-CAM, Grad-CAM++, guided Grad-CAM, input x gradient, "
                         "SmoothGrad, integrated gradients) over the images"),
    "find-max": Command("deepvis.apps.cli.find_max", "the dataset images that excite each unit most"),
    "crops": Command("deepvis.apps.cli.crops", "receptive-field crops and their backward images"),
    "optimize": Command("deepvis.apps.cli.optimize",
                        "synthetic images that maximize units (activation maximization)"),
    "evaluate": Command("deepvis.apps.cli.evaluate", "quality metrics of a store's optimized images"),
    "accentuate": Command("deepvis.apps.cli.accentuate",
                          "change a real image just enough to excite a unit (feature accentuation)"),
    "serve": Command("deepvis.apps.cli.serve", "the live toolbox in the browser"),
    "export": Command("deepvis.apps.cli.export", "a static, shareable site of a store: one page per unit"),
}
