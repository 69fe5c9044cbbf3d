"""The fan-out benchmark (``make bench``): pulsestream against a tutorial-style bridge.

Outside the product: not installed, run from the repository root as
``python -m bench``. See ``bench/__main__.py`` for the options and the README's
"Performance" section for the latest numbers.
"""
