"""Ablation evaluation of a GAC preset: ``python -m eval --data DIR --out OUTDIR``; the API is in ``eval.ablation``."""
