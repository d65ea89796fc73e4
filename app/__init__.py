"""Gradio app for GAC: ``ui`` builds the interface, ``handlers`` holds the testable logic.

This package must exist next to ``app.py``: without it, ``import app.ui`` would find the
``app.py`` module instead of this folder.
"""
