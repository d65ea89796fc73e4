"""GAC: Sentinel-1 SAR to Sentinel-2 optical in three collaborating stages."""

from gac_pipeline._compat import ensure_torchvision_ops

# Must run before anything imports torchvision (terratorch, peft, lpips do).
ensure_torchvision_ops()

__version__ = "0.1.0"
