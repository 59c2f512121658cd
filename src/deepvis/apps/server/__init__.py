"""The live toolbox in the browser: ``deepvis serve``."""
