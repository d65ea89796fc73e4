"""Reading Sentinel-1 / Sentinel-2 GeoTIFFs and writing optical outputs (rasterio).

Every problem with a user's file is raised as :class:`InputError`, whose message is one line
that names the file and says what was expected, so the CLI and the app can show it as is.

One module per concern: ``sar`` (VV/VH in dB), ``optical`` (L2A bands as DN), ``grid`` (does a
reference lie on the SAR grid), ``writer`` (the outputs), ``dates`` (acquisition month) and
``common`` (opening, reading, header checks and masks, shared by the readers).
"""

from gac_pipeline.io.common import InputError
from gac_pipeline.io.dates import acquisition_month, parse_month
from gac_pipeline.io.grid import GRID_TOLERANCE_PX, check_same_grid
from gac_pipeline.io.optical import OpticalRaster, read_s2
from gac_pipeline.io.sar import PREVIEW_SIZE, SarRaster, SarSource, read_s1
from gac_pipeline.io.writer import OpticalWriter, read_output, write_optical

__all__ = [
    "GRID_TOLERANCE_PX", "PREVIEW_SIZE", "InputError", "OpticalRaster", "OpticalWriter", "SarRaster", "SarSource",
    "acquisition_month", "check_same_grid", "parse_month", "read_output", "read_s1", "read_s2", "write_optical",
]
