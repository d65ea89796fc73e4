"""Gradio app for GAC: ``ui`` builds the interface; ``handlers`` (translate tab) and ``evaluation``
(evaluation tab) hold the testable logic without Gradio.

This package must exist next to ``app.py``: without it, ``import app.ui`` would find the
``app.py`` module instead of this folder.
"""
