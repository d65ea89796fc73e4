"""Reading, validating and writing GeoTIFFs: real bundled tiles plus generated bad inputs."""

import re

import bad_inputs
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from gac_pipeline.bands import S2L2A_BANDS
from gac_pipeline.data import DEFAULT_DATA_DIR
from gac_pipeline.io import (
    InputError,
    OpticalWriter,
    SarSource,
    acquisition_month,
    check_same_grid,
    parse_month,
    read_output,
    read_s1,
    read_s2,
    write_optical,
    writer,
)

BENV1 = DEFAULT_DATA_DIR / "benv1" / "S2A_MSIL2A_20170613T101031_39_24"
BENV2 = DEFAULT_DATA_DIR / "benv2" / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"


# ----------------------------------------------------------------------------- real tiles


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("pair", [BENV1, BENV2], ids=["benv1", "benv2"])
def test_real_tiles_read(pair):
    sar = read_s1(pair / "S1GRD.tif")
    ref = read_s2(pair / "S2L2A.tif")
    assert sar.data.shape == (2, 120, 120) and sar.data.dtype == np.float32
    assert sar.valid_mask.shape == (120, 120) and sar.valid_mask.all()
    assert np.isfinite(sar.data).all() and np.median(sar.data) < 0
    assert sar.month == 6
    assert ref.data.shape == (12, 120, 120) and ref.data.dtype == np.float32
    assert ref.valid_mask.all() and ref.notes == []
    with rasterio.open(pair / "S2L2A.tif") as dataset:
        np.testing.assert_array_equal(ref.data, dataset.read().astype(np.float32))
    check_same_grid(sar, ref, "S1GRD.tif", "S2L2A.tif")


def test_benv1_has_no_crs_and_says_so():
    sar = read_s1(BENV1 / "S1GRD.tif")
    assert sar.profile["crs"] is None
    assert any("no CRS" in note for note in sar.notes)
    assert read_s1(BENV2 / "S1GRD.tif").profile["crs"] == CRS.from_epsg(32633)


# ----------------------------------------------------------------------------- bad inputs

BAD_SAR = [
    pytest.param(
        bad_inputs.write_not_a_tiff, r"not_a_tiff\.tif: not a readable raster", id="not-tiff"
    ),
    pytest.param(
        bad_inputs.write_truncated, r"truncated\.tif: .*(truncated|not a readable raster)",
        id="truncated",
    ),
    pytest.param(
        lambda folder: bad_inputs.write_sar_bands(folder, 1), r"expected 2 SAR bands.*found 1$",
        id="1-band",
    ),
    pytest.param(
        lambda folder: bad_inputs.write_sar_bands(folder, 3), r"expected 2 SAR bands.*found 3$",
        id="3-bands",
    ),
    pytest.param(
        lambda folder: bad_inputs.write_sar_bands(folder, 12), r"expected 2 SAR bands.*found 12$",
        id="12-bands",
    ),
    pytest.param(bad_inputs.write_all_nan, r"all_nan\.tif: no valid pixels", id="all-nan"),
    pytest.param(
        bad_inputs.write_linear_no_units, r"all non-negative \(median 0\.0\d+\).*units='linear'",
        id="linear-no-units",
    ),
    pytest.param(
        bad_inputs.write_amplitude, r"amplitude\.tif: .*amplitude.*dB or linear power",
        id="amplitude",
    ),
    pytest.param(bad_inputs.write_tiny, r"tiny\.tif: image is 8x8 pixels, too small", id="8x8"),
    pytest.param(
        bad_inputs.write_huge_header, r"huge\.tif: image is 50000x50000 pixels.*too large",
        id="50000x50000",
    ),
    pytest.param(
        bad_inputs.write_complex, r"complex\.tif: unsupported data type complex64", id="complex"
    ),
    pytest.param(
        bad_inputs.write_one_bit, r"one_bit\.tif: unsupported 1-bit \(boolean\) data", id="bool"
    ),
    pytest.param(bad_inputs.write_hh_hv, r"'HH', 'HV': HH/HV polarisations, the models know VV and VH only",
                 id="hh-hv"),
    pytest.param(
        lambda folder: bad_inputs.write_raster(folder / "zeros.tif", np.zeros((2, 32, 32), np.float32)),
        r"zeros\.tif: every value is 0: an empty image, not SAR backscatter$", id="all-zero",
    ),
    pytest.param(
        lambda folder: bad_inputs.write_raster(folder / "quicklook.tif", _eight_bit(bad_inputs.sar_db())),
        r"quicklook\.tif: 8-bit \(uint8\) data is a display-scaled image, not calibrated SAR backscatter",
        id="uint8",
    ),
    pytest.param(
        lambda folder: bad_inputs.write_raster(folder / "db_x100.tif", _db_x100(bad_inputs.sar_db())),
        r"db_x100\.tif: median VV is -1\d{3}\.\d dB, outside the plausible -60\.\.\+10 dB", id="db-x100-no-scale",
    ),
]


def _db_x100(db: np.ndarray) -> np.ndarray:
    """dB stored as int16 hundredths, a common compact export."""
    return np.round(db * 100).astype(np.int16)


def _eight_bit(db: np.ndarray) -> np.ndarray:
    """dB stretched -40..+11 dB to 0..255 as uint8, like a quicklook (0.2 dB steps)."""
    return np.clip(np.round((db + 40) * 5), 0, 255).astype(np.uint8)


def _write_scaled(path, stored: np.ndarray, scale: float = 1.0, offset: float = 0.0, **profile):
    """A SAR GeoTIFF of ``stored`` values with GDAL band scale/offset (both bands alike)."""
    bad_inputs.write_raster(path, stored, **profile)
    with rasterio.open(path, "r+") as dataset:
        dataset.scales, dataset.offsets = (scale,) * 2, (offset,) * 2
    return path


@pytest.mark.parametrize("write, message", BAD_SAR)
def test_bad_sar_is_refused_with_one_line_reason(tmp_path, write, message):
    path = write(tmp_path)
    with pytest.raises(InputError, match=message) as caught:
        read_s1(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(path.name + ": ")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="nothing.tif: file not found"):
        read_s1(tmp_path / "nothing.tif")
    with pytest.raises(InputError, match="is a folder"):
        read_s2(tmp_path)


def test_huge_header_is_refused_before_reading(tmp_path):
    path = bad_inputs.write_huge_header(tmp_path)
    assert path.stat().st_size < 200_000  # nothing but the header and an empty tile index
    with pytest.raises(InputError, match="limit is 1,000,000,000"):
        SarSource(path)


def test_partly_nan_is_masked_and_filled_with_median(tmp_path):
    path = bad_inputs.write_partly_nan(tmp_path)
    with rasterio.open(path) as dataset:
        raw = dataset.read()
    sar = read_s1(path)
    bad = ~np.isfinite(raw)
    assert (~sar.valid_mask).sum() == 15
    np.testing.assert_array_equal(sar.valid_mask, ~bad.any(axis=0))
    assert np.isfinite(sar.data).all()
    for band in range(2):
        median = np.median(raw[band][~bad[band]])
        np.testing.assert_allclose(sar.data[band][bad[band]], median)
        np.testing.assert_array_equal(sar.data[band][~bad[band]], raw[band][~bad[band]])
    assert any("masked 15 NaN/inf/nodata pixels (1.5%)" in note for note in sar.notes)


def test_nodata_value_is_masked(tmp_path):
    sar = read_s1(bad_inputs.write_nodata(tmp_path))
    assert not sar.valid_mask[0].any() and sar.valid_mask[1:].all()
    assert sar.data.min() > -100 and sar.profile["nodata"] == -9999.0


def test_linear_power_is_converted_only_when_declared(tmp_path):
    expected = bad_inputs.sar_db()

    sar = read_s1(bad_inputs.write_linear_with_units(tmp_path))  # band units "linear power"
    assert "converted linear power to dB (units from metadata)" in sar.notes
    assert not sar.valid_mask[3, 4] and (~sar.valid_mask).sum() == 1  # the 0 power pixel
    np.testing.assert_allclose(sar.data[:, sar.valid_mask], expected[:, sar.valid_mask], atol=1e-4)

    sar = read_s1(bad_inputs.write_linear_tagged(tmp_path))  # dataset tag UNITS=intensity
    np.testing.assert_allclose(sar.data, expected, atol=1e-4)

    sar = read_s1(bad_inputs.write_linear_no_units(tmp_path), units="linear")
    assert "converted linear power to dB (units given)" in sar.notes
    assert sar.data.dtype == np.float32 and sar.valid_mask.all()
    np.testing.assert_allclose(sar.data, expected, atol=1e-4)


@pytest.mark.parametrize(("dtype", "scale", "offset"), [
    ("int16", 0.01, 0.0), ("uint16", 0.01, -50.0), ("float32", 1.0, -50.0), ("uint8", 0.2, -40.0),
])
def test_sar_scale_and_offset_are_applied(tmp_path, dtype, scale, offset):
    """dB stored as (dB - offset) / scale reads like the float dB file of the same tile, with a note."""
    db = np.round(bad_inputs.sar_db() / scale) * np.float32(scale)  # what the stored steps can hold
    stored = np.round((db - offset) / scale).astype(dtype)
    scaled = read_s1(_write_scaled(tmp_path / "scaled.tif", stored, scale, offset))
    plain = read_s1(bad_inputs.write_raster(tmp_path / "plain.tif", db.astype(np.float32)))
    np.testing.assert_allclose(scaled.data, plain.data, atol=1e-4)
    assert scaled.valid_mask.all()
    assert f"applied the file's scale/offset ({scale:g}, {offset:g}) to VV, VH" in scaled.notes
    assert not any("scale/offset" in note for note in plain.notes)


def test_sar_nodata_is_compared_before_the_scale(tmp_path):
    stored = _db_x100(bad_inputs.sar_db())
    stored[:, 0, :] = -32768  # the stored nodata; scaled it would be -327.68
    sar = read_s1(_write_scaled(tmp_path / "nodata.tif", stored, 0.01, nodata=-32768))
    assert not sar.valid_mask[0].any() and sar.valid_mask[1:].all()
    assert -60 < sar.data.min() and sar.data.max() < 10
    assert any("masked 32 NaN/inf/nodata pixels" in note for note in sar.notes)


@pytest.mark.parametrize("units", [None, "db", "linear"])
def test_all_zero_sar_is_empty_whatever_the_units(tmp_path, units):
    path = bad_inputs.write_raster(tmp_path / "zeros.tif", np.zeros((2, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"^zeros\.tif: every value is 0: an empty image"):
        read_s1(path, units=units)


def test_sar_medians_outside_the_plausible_db_range_are_refused(tmp_path):
    # Linear power 10^4 too bright (a DN-like export): about +28 dB VV once converted.
    path = bad_inputs.write_raster(tmp_path / "bright.tif", 10 ** ((bad_inputs.sar_db() + 40) / 10))
    with pytest.raises(InputError, match=r"^bright\.tif: median VV is \+2\d\.\d dB after converting linear power "
                                         r"to dB, outside the plausible -60\.\.\+10 dB \(typical VV -25\.\.0 dB"):
        read_s1(path, units="linear")
    # The bands are checked one by one: an implausible VH alone is named.
    data = bad_inputs.sar_db()
    data[1] -= 50
    with pytest.raises(InputError, match=r"^dark\.tif: median VH is -6\d\.\d dB, outside"):
        read_s1(bad_inputs.write_raster(tmp_path / "dark.tif", data))
    # 8-bit data with no scale is refused even when the caller says it is linear power.
    path = bad_inputs.write_raster(tmp_path / "quicklook.tif", _eight_bit(bad_inputs.sar_db()))
    with pytest.raises(InputError, match=r"^quicklook\.tif: 8-bit \(uint8\) data"):
        read_s1(path, units="linear")


def test_units_db_overrides_refusal_and_bad_units_argument(tmp_path):
    path = bad_inputs.write_linear_no_units(tmp_path)
    assert read_s1(path, units="db").data.min() >= 0  # taken as given, no conversion
    with pytest.raises(ValueError, match="units must be"):
        read_s1(path, units="amplitude")


@pytest.mark.parametrize(("descriptions", "swapped"), [
    (("Sigma0_VH_db", "Sigma0_VV_db"), True), (("vv", "vh"), False), (("Gamma0_VV", "Gamma0_VH"), False),
    (("S1_vh", "s1-VV"), True),
])
def test_sar_bands_are_taken_by_polarisation_name(tmp_path, descriptions, swapped):
    """A SNAP-style VH,VV file reads (and translates) exactly like the VV,VH file."""
    from gac_pipeline.presets import load_preset

    data = bad_inputs.sar_db()
    path = bad_inputs.write_raster(tmp_path / "named.tif", data[::-1] if swapped else data, descriptions=descriptions)
    sar = read_s1(path)
    np.testing.assert_array_equal(sar.data, data)
    assert any("reordered" in note for note in sar.notes) == swapped
    if swapped:
        plain = read_s1(bad_inputs.write_raster(tmp_path / "plain.tif", data, descriptions=("VV", "VH")))
        pipeline = load_preset("mini")
        np.testing.assert_array_equal(pipeline.translate(sar.data).opt_v3, pipeline.translate(plain.data).opt_v3)


@pytest.mark.parametrize(("descriptions", "message"), [
    (("band_1", "band_2"), r"named\.tif: band descriptions 'band_1', 'band_2' do not name one VV and one VH band$"),
    (("VV", "VV_copy"), r"do not name one VV and one VH band$"),
    (("Sigma0_HH_db", "Sigma0_HV_db"), r"HH/HV polarisations, the models know VV and VH only$"),
])
def test_sar_band_names_that_are_not_vv_vh_are_refused(tmp_path, descriptions, message):
    path = bad_inputs.write_raster(tmp_path / "named.tif", bad_inputs.sar_db(), descriptions=descriptions)
    with pytest.raises(InputError, match=message):
        read_s1(path)


def test_sar_without_band_descriptions_takes_file_order_and_says_so(tmp_path):
    sar = read_s1(bad_inputs.write_raster(tmp_path / "bare.tif", bad_inputs.sar_db()))
    np.testing.assert_array_equal(sar.data, bad_inputs.sar_db())
    assert "no band descriptions: took band 1 as VV and band 2 as VH" in sar.notes


def _copy_s2(source, path, *, add=0, offsets=None, scales=None, band_tags=None, tags=None):
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((data.astype(np.int32) + add).astype(profile["dtype"]))
        if offsets is not None:
            dst.offsets = offsets
        if scales is not None:
            dst.scales = scales
        for band, band_tag in (band_tags or {}).items():
            dst.update_tags(band, **band_tag)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.mark.parametrize("kind", ["gdal_offset", "boa_band_tag", "boa_dataset_tag", "reflectance_scale"])
def test_l2a_offsets_are_honoured(tmp_path, kind):
    """A reference stored as DN + 1000 with its offset declared scores exactly like the plain one."""
    from gac_pipeline.metrics import psnr

    source = BENV2 / "S2L2A.tif"
    declared = {"gdal_offset": {"offsets": (-1000.0,) * 12},
                "boa_band_tag": {"band_tags": {b: {"BOA_ADD_OFFSET": "-1000"} for b in range(1, 13)}},
                "boa_dataset_tag": {"tags": {"BOA_ADD_OFFSET": "-1000"}},
                "reflectance_scale": {"scales": (1e-4,) * 12, "offsets": (-0.1,) * 12}}[kind]
    shifted = read_s2(_copy_s2(source, tmp_path / "offset.tif", add=1000, **declared))
    plain = read_s2(source)
    np.testing.assert_allclose(shifted.data, plain.data, atol=0.05)  # float32 rounding of the 1e-4 scale
    assert any("DN" in note for note in shifted.notes)
    prediction = np.full_like(plain.data, 800.0)
    assert psnr(prediction, shifted.data) == pytest.approx(psnr(prediction, plain.data), abs=1e-4)


def test_l2a_reflectance_scale_and_baseline_note(tmp_path):
    source = BENV2 / "S2L2A.tif"
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read().astype(np.float32)
    profile.update(dtype="float32")
    path = tmp_path / "reflectance.tif"
    with rasterio.open(path, "w", **profile) as dst:  # 2 x DN + 100 with GDAL scale 0.5, offset -50
        dst.write(2 * data + 100)
        dst.offsets = (-50,) * 12
        dst.scales = (0.5,) * 12
    # scale 0.5 (>= 0.01): the scaled values are taken as DN
    np.testing.assert_allclose(read_s2(path).data, data, rtol=1e-6)
    named = _copy_s2(source, tmp_path / "S2B_MSIL2A_20230601T100559_N0509_R022_T33UUP.tif")
    assert any("processing baseline 05.09 and no offset" in note for note in read_s2(named).notes)
    assert not any("baseline" in note for note in read_s2(source).notes)  # N9999: BigEarthNet's placeholder


def test_band_order_from_descriptions(tmp_path):
    sar = read_s1(bad_inputs.write_swapped_bands(tmp_path))
    np.testing.assert_array_equal(sar.data, bad_inputs.sar_db())
    assert any("reordered" in note for note in sar.notes)

    ref = read_s2(bad_inputs.write_s2_shuffled(tmp_path))
    np.testing.assert_array_equal(ref.data, bad_inputs.s2_dn().astype(np.float32))


# ----------------------------------------------------------------------------- S2 reference


def test_bad_references(tmp_path):
    with pytest.raises(InputError, match=r"s2_four_bands\.tif: expected 12 .* found 4"):
        read_s2(bad_inputs.write_s2_four_bands(tmp_path))
    with pytest.raises(InputError, match=r"missing B8A"):
        read_s2(bad_inputs.write_s2_missing_band(tmp_path))
    with pytest.raises(InputError, match=r"expected 12 Sentinel-2 L2A bands .*found 2$"):
        read_s2(BENV1 / "S1GRD.tif")

    ref = read_s2(bad_inputs.write_s2_partly_nan(tmp_path))
    assert (~ref.valid_mask).sum() == 4 and np.isfinite(ref.data).all()
    assert any("masked 4" in note for note in ref.notes)


def test_check_same_grid(tmp_path):
    sar = read_s1(bad_inputs.write_partly_nan(tmp_path))  # 32x32, UTM 33N
    wrong_size = read_s2(bad_inputs.write_s2_wrong_size(tmp_path))
    with pytest.raises(InputError, match=r"s2_wrong_size\.tif: reference is 24x32 .* 32x32"):
        check_same_grid(sar, wrong_size, "partly_nan.tif", "s2_wrong_size.tif")
    other_crs = read_s2(bad_inputs.write_s2_other_crs(tmp_path))
    with pytest.raises(InputError, match=r"CRS EPSG:32632 differs .* EPSG:32633"):
        check_same_grid(sar, other_crs, "partly_nan.tif", "s2_other_crs.tif")
    # A reference without a CRS (benv1 style) is only checked for size.
    no_crs = read_s2(bad_inputs.write_s2_other_crs(tmp_path))
    no_crs.profile["crs"] = None
    check_same_grid(sar, no_crs, "partly_nan.tif", "s2_other_crs.tif")


@pytest.mark.parametrize(("shift_m", "scale", "accepted"), [(0.0, 1.0, True), (0.05, 1.0, True), (10.0, 1.0, False),
                                                           (-20.0, 1.0, False), (0.0, 1.02, False)])
def test_check_same_grid_compares_transforms(tmp_path, shift_m, scale, accepted):
    """A reference moved by one 10 m pixel (same CRS and size) is refused, naming both files and the offset."""
    from affine import Affine

    source = BENV2 / "S2L2A.tif"
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    t = profile["transform"]
    profile["transform"] = Affine(t.a * scale, t.b, t.c + shift_m, t.d, t.e * scale, t.f)
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(data)
    sar, ref = read_s1(BENV2 / "S1GRD.tif"), read_s2(shifted)
    if accepted:
        check_same_grid(sar, ref, BENV2 / "S1GRD.tif", shifted)
        return
    with pytest.raises(InputError, match=r"^shifted\.tif: reference grid is offset from SAR scene S1GRD\.tif by \("):
        check_same_grid(sar, ref, BENV2 / "S1GRD.tif", shifted)
    if scale == 1.0:
        with pytest.raises(InputError, match=re.escape(f"({shift_m / 10:+.2f}, +0.00) pixels")):
            check_same_grid(sar, ref, BENV2 / "S1GRD.tif", shifted)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("pair", [BENV1, BENV2], ids=["benv1", "benv2"])
def test_write_optical_round_trip(tmp_path, pair):
    sar = read_s1(pair / "S1GRD.tif")
    dn = np.random.default_rng(0).uniform(0, 10000, (12, 120, 120)).astype(np.float32)
    out = tmp_path / "out.tif"
    write_optical(out, dn, sar.profile)
    with rasterio.open(out) as dataset:
        assert dataset.count == 12 and dataset.dtypes[0] == "float32"
        assert dataset.crs == sar.profile["crs"]
        assert dataset.transform == sar.profile["transform"]
        assert np.isnan(dataset.nodata)
        assert dataset.descriptions == S2L2A_BANDS
        assert dataset.compression.name.lower() == "zstd"
        np.testing.assert_array_equal(dataset.read(), dn)


@pytest.mark.parametrize("write", [bad_inputs.write_partly_nan, bad_inputs.write_nodata], ids=["nan", "nodata"])
def test_write_optical_masks_with_nan_never_the_sar_nodata(tmp_path, write):
    sar = read_s1(write(tmp_path))
    assert not sar.valid_mask.all()
    dn = np.full((12, 32, 32), 1234.5, np.float32)
    write_optical(tmp_path / "out.tif", dn, sar.profile, valid_mask=sar.valid_mask)
    with rasterio.open(tmp_path / "out.tif") as dataset:
        assert np.isnan(dataset.nodata) and dataset.dtypes == ("float32",) * 12
        written = dataset.read()
    assert np.isnan(written[:, ~sar.valid_mask]).all()
    assert (written[:, sar.valid_mask] == 1234.5).all()


def test_uint16_outputs_hold_whole_dn_with_zero_as_nodata(tmp_path):
    sar = read_s1(bad_inputs.write_nodata(tmp_path))  # its first row is masked
    dn = np.full((12, 32, 32), 1234.4, np.float32)
    dn[0, 5, :3] = [0.0, 1234.6, 70000.0]  # below 1 DN, rounding up, past the uint16 range
    write_optical(tmp_path / "out.tif", dn, sar.profile, valid_mask=sar.valid_mask, dtype="uint16")
    with rasterio.open(tmp_path / "out.tif") as dataset:
        assert dataset.dtypes == ("uint16",) * 12 and dataset.nodata == 0
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        written = dataset.read()
    assert (written[:, ~sar.valid_mask] == 0).all()
    assert written[0, 5, :3].tolist() == [1, 1235, 65535] and (written[1:, sar.valid_mask] == 1234).all()
    back = read_output(tmp_path / "out.tif")  # nodata back as NaN, as from a float32 output
    assert back.dtype == np.float32 and np.isnan(back[:, ~sar.valid_mask]).all()
    assert (back[1:, sar.valid_mask] == 1234).all()
    with pytest.raises(ValueError, match="float32, uint16.*'int8'"):
        write_optical(tmp_path / "bad.tif", dn, sar.profile, dtype="int8")


def test_optical_writer_strips_equal_whole_write_as_cogs(tmp_path):
    height, width = 640, 520  # both over the 512-px tiles: one overview level
    dn = np.arange(12 * height * width, dtype=np.float32).reshape(12, height, width)
    valid = np.ones((height, width), bool)
    valid[290:, :5] = False
    profile = {"crs": CRS.from_epsg(32633), "transform": bad_inputs.TRANSFORM, "nodata": None}

    write_optical(tmp_path / "whole.tif", dn, profile, valid_mask=valid, tags={"stage": "opt_v1"})
    with OpticalWriter(tmp_path / "strips.tif", profile, height, width, {"stage": "opt_v1"}) as writer:
        for row in range(0, height, 120):  # 128-px windows, 8 px overlap: not a multiple of 16 rows
            writer.write_rows(row, dn[:, row:row + 120], valid[row:row + 120])
        with pytest.raises(ValueError, match="does not fit"):
            writer.write_rows(height - 1, dn[:, :2])

    with rasterio.open(tmp_path / "whole.tif") as whole, rasterio.open(
        tmp_path / "strips.tif"
    ) as strips:
        for dataset in (whole, strips):
            assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert dataset.profile["tiled"] and dataset.block_shapes[0] == (512, 512)
            assert dataset.overviews(1) == [2] and dataset.compression.name.lower() == "zstd"
            assert dataset.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating point
            assert dataset.tags()["stage"] == "opt_v1" and dataset.descriptions == S2L2A_BANDS
        np.testing.assert_array_equal(strips.read(), whole.read())
        assert np.isnan(strips.read(1)[290:, :5]).all()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["strips.tif", "whole.tif"]  # no .partial left


@pytest.mark.parametrize(("height", "width"), [(300, 500), (640, 520), (1100, 700), (2049, 90), (90, 2048), (1025, 3000)])
def test_overviews_built_first_equal_the_cog_drivers_own(tmp_path, monkeypatch, height, width):
    rng = np.random.default_rng(0)
    dn = rng.uniform(0, 3000, (12, height, width)).astype(np.float32)
    valid = np.ones((height, width), bool)
    valid[:37, :50] = False  # NaN in the averages too
    profile = {"crs": CRS.from_epsg(32633), "transform": bad_inputs.TRANSFORM}
    for first in (True, False):
        monkeypatch.setattr(writer, "OVERVIEWS_FIRST", first)
        with OpticalWriter(tmp_path / f"{first}.tif", profile, height, width) as out:
            out.write_rows(0, dn, valid)
    with rasterio.open(tmp_path / "True.tif") as ours, rasterio.open(tmp_path / "False.tif") as drivers:
        assert ours.overviews(1) == drivers.overviews(1) == writer.overview_factors(height, width)
        np.testing.assert_array_equal(ours.read(), drivers.read())
        for level, factor in enumerate(ours.overviews(1)):
            with rasterio.open(tmp_path / "True.tif", overview_level=level) as a, rasterio.open(
                    tmp_path / "False.tif", overview_level=level) as b:
                # Ours keep a partial last row/column of blocks (sizes rounded up); where the
                # image divides evenly they are the driver's own averages, value for value.
                assert a.shape == (-(-height // factor), -(-width // factor))
                if height % factor == 0 and width % factor == 0:
                    np.testing.assert_array_equal(a.read(), b.read())


def test_optical_writer_leaves_nothing_when_the_run_fails(tmp_path):
    profile = {"crs": CRS.from_epsg(32633), "transform": bad_inputs.TRANSFORM}
    failed = pytest.raises(RuntimeError, match="model failed")
    with failed, OpticalWriter(tmp_path / "out.tif", profile, 32, 32) as writer:
        writer.write_rows(0, np.ones((12, 16, 32)))
        raise RuntimeError("model failed")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- streaming


def test_sar_source_windows_match_whole_read():
    path = BENV2 / "S1GRD.tif"
    whole = read_s1(path)
    with SarSource(path, preview_size=40) as source:  # decimated preview, windowed reads
        assert (source.height, source.width, source.month) == (120, 120, 6)
        for row, col, h, w in [(0, 0, 64, 64), (64, 56, 56, 64), (100, 0, 20, 120)]:
            data, valid = source.read(row, col, h, w)
            assert data.shape == (2, h, w) and data.dtype == np.float32 and valid.all()
            np.testing.assert_array_equal(data, whole.data[:, row:row + h, col:col + w])
        with pytest.raises(ValueError, match="outside"):
            source.read(100, 100, 64, 64)


def test_sar_source_windows_of_a_scaled_file_match_whole_read(tmp_path):
    db = bad_inputs.sar_db(96, 80, seed=3)
    path = _write_scaled(tmp_path / "scaled.tif", _db_x100(db), 0.01, 0.0)
    whole = read_s1(path)
    np.testing.assert_allclose(whole.data, db, atol=0.006)  # hundredths of a dB
    with SarSource(path, preview_size=40) as source:  # decimated preview, windowed reads
        assert "applied the file's scale/offset (0.01, 0) to VV, VH" in source.notes
        for row, col, h, w in [(0, 0, 64, 64), (40, 30, 56, 50), (90, 0, 6, 80)]:
            data, valid = source.read(row, col, h, w)
            assert valid.all()
            np.testing.assert_array_equal(data, whole.data[:, row:row + h, col:col + w])


def test_sar_source_fills_from_preview(tmp_path):
    path = bad_inputs.write_partly_nan(tmp_path)
    whole = read_s1(path)
    with SarSource(path, preview_size=16) as source:
        assert any("16x16 preview" in note for note in source.notes)
        data, valid = source.read(0, 0, 32, 32)
    np.testing.assert_array_equal(valid, whole.valid_mask)
    np.testing.assert_array_equal(data[:, valid], whole.data[:, valid])
    assert np.isfinite(data).all()


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    "name, tags, month",
    [
        ("scene.tif", {"TIFFTAG_DATETIME": "2019:03:05 12:00:00"}, 3),
        ("scene.tif", {"ACQUISITION_DATE": "2018-11-02"}, 11),
        ("scene.tif", {"s1_date": "20170612", "s2_date": "20170701"}, 6),
        ("scene.tif", {"patch": "S1B_IW_GRDH_1SDV_20171202T165809_33UUP"}, 12),
        ("S1A_IW_GRDH_1SDV_20170613T165809_x.tif", {}, 6),
        ("scene_20170913_vv.tif", None, 9),
        ("scene_20171313_vv.tif", {}, None),  # month 13 is no date
        ("scene.tif", {"TIFFTAG_DATETIME": "2019:03:05"}, 3),
        ("scene_20170401_x.tif", {"TIFFTAG_DATETIME": "2023:10:05 10:00:00"}, 4),
        ("scene.tif", {}, None),
    ],
)
def test_acquisition_month(name, tags, month):
    assert acquisition_month(name, tags) == month


def test_month_from_file_name_and_parse_month(tmp_path):
    assert read_s1(bad_inputs.write_dated(tmp_path)).month == 6
    assert parse_month("20170612.0") == 6 and parse_month(None) is None
    assert parse_month("N9999_R022_T33UUP_37_88") is None


def test_db_values_read_as_linear_power_are_refused(tmp_path):
    """Negative values cannot be linear power: mostly negative is dB read with the wrong units, while
    a few negative pixels (noise-removed power dips below 0) still run."""
    path = bad_inputs.write_raster(tmp_path / "db.tif", bad_inputs.sar_db())
    with pytest.raises(InputError, match=r"^db\.tif: 100% of the values are negative, which linear power cannot be"):
        read_s1(path, units="linear")
    power = 10 ** (bad_inputs.sar_db() / 10)
    power[:, 0, :4] = -1e-4
    assert read_s1(bad_inputs.write_raster(tmp_path / "power.tif", power), units="linear").valid_mask.sum() == 32 * 32 - 4


def test_reflectance_saved_without_a_scale_is_refused(tmp_path):
    path = bad_inputs.write_raster(tmp_path / "reflectance.tif", bad_inputs.s2_dn() / 10000)
    with pytest.raises(InputError, match=r"^reflectance\.tif: every band's median is at most 1\.5: this looks "
                                         r"like reflectance \(0\.\.1\), not digital numbers"):
        read_s2(path)


def test_a_picture_renamed_tif_is_named_as_a_picture(tmp_path):
    path = tmp_path / "photo.tif"
    with rasterio.open(path, "w", driver="PNG", width=32, height=32, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 32, 32), np.uint8))
    for read in (read_s1, read_s2):
        with pytest.raises(InputError, match=r"^photo\.tif: a PNG picture, not a GeoTIFF"):
            read(path)
