"""Whether a reference image lies on the SAR scene's pixel grid."""

from pathlib import Path

from gac_pipeline.io.common import InputError, _name
from gac_pipeline.io.optical import OpticalRaster
from gac_pipeline.io.sar import SarRaster, SarSource


def _crs_label(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


# How far (in SAR pixels) a reference's corners may sit from the SAR grid's: rounding in the files'
# transforms, not a misregistration.
GRID_TOLERANCE_PX = 0.01


def check_same_grid(
    sar: SarRaster | SarSource,
    ref: OpticalRaster,
    sar_path: str | Path,
    ref_path: str | Path,
) -> None:
    """Check that a reference optical image lies on the SAR scene's pixel grid.

    Args:
        sar: the SAR scene (read whole or streamed).
        ref: the reference image.
        sar_path: SAR file, for the message.
        ref_path: reference file, for the message.

    Raises:
        InputError: the sizes differ, or both have a CRS and the CRSs differ, or their
            transforms differ by more than :data:`GRID_TOLERANCE_PX` of a pixel (origin or
            pixel size): a reference shifted by one pixel would be scored as if aligned.
    """
    sar_size = (sar.profile["height"], sar.profile["width"])
    ref_size = (ref.profile["height"], ref.profile["width"])
    if sar_size != ref_size:
        raise InputError(
            f"{_name(ref_path)}: reference is {ref_size[0]}x{ref_size[1]} pixels but SAR scene "
            f"{_name(sar_path)} is {sar_size[0]}x{sar_size[1]}: expected the same grid"
        )
    sar_crs, ref_crs = sar.profile.get("crs"), ref.profile.get("crs")
    if sar_crs is not None and ref_crs is not None and sar_crs != ref_crs:
        raise InputError(
            f"{_name(ref_path)}: reference CRS {_crs_label(ref_crs)} differs from SAR scene "
            f"{_name(sar_path)} CRS {_crs_label(sar_crs)}: expected the same grid"
        )
    sar_transform, ref_transform = sar.profile.get("transform"), ref.profile.get("transform")
    if sar_crs is None or ref_crs is None or sar_transform is None or ref_transform is None:
        return  # no georeference to compare (e.g. BigEarthNet v1 tiles): sizes only
    # The reference's origin and far corner in SAR pixel coordinates: (0, 0) and (W, H) on the same grid.
    width, height = sar_size[1], sar_size[0]
    origin = ~sar_transform @ (ref_transform.c, ref_transform.f)
    corner = ~sar_transform @ (ref_transform @ (width, height))
    offset = max(abs(origin[0]), abs(origin[1]), abs(corner[0] - width), abs(corner[1] - height))
    if offset > GRID_TOLERANCE_PX:
        raise InputError(
            f"{_name(ref_path)}: reference grid is offset from SAR scene {_name(sar_path)} by "
            f"({origin[0]:+.2f}, {origin[1]:+.2f}) pixels (column, row) at its origin and "
            f"({corner[0] - width:+.2f}, {corner[1] - height:+.2f}) at its far corner: expected the same grid"
        )
