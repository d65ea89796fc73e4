"""The fixed display stretches: composites, change and error maps, colour bars."""

import numpy as np
import pytest

from gac_pipeline import display
from gac_pipeline.bands import BAND_CENTRES_NM, S2L2A_BANDS

# S2L2A DN spectra, B01..B12 without B10.
VEGETATION = np.array([250, 300, 600, 300, 1200, 3000, 3800, 4000, 4100, 4200, 2000, 900], np.float32)
WATER = np.array([600, 550, 500, 400, 300, 250, 220, 200, 180, 150, 50, 30], np.float32)


def tile(spectrum, size=3):
    return np.broadcast_to(np.asarray(spectrum, np.float32)[:, None, None], (12, size, size)).copy()


def colours(image):
    return {tuple(pixel) for pixel in image.reshape(-1, 3).tolist()}


@pytest.mark.parametrize("name", list(display.COMPOSITES))
def test_every_composite_and_map_is_uint8_hw3(name):
    dn = tile(VEGETATION)
    for image in (display.composite(dn, name), display.change_map(dn, tile(WATER), name),
                  display.error_map(dn, tile(WATER), name)):
        assert image.dtype == np.uint8 and image.shape == (3, 3, 3)
    assert display.composite_values(dn, name).shape == ((1 if name == "NDVI" else 3), 3, 3)


def test_composites_are_ordered_for_the_selector_and_band_centres_align():
    assert list(display.COMPOSITES) == ["true colour", "false-colour NIR", "SWIR", "NDVI"]
    assert len(BAND_CENTRES_NM) == len(S2L2A_BANDS) and list(BAND_CENTRES_NM) == sorted(BAND_CENTRES_NM)
    assert BAND_CENTRES_NM[S2L2A_BANDS.index("B8A")] == 865


def test_rgb_composites_use_their_bands_and_fixed_maxima():
    # Each band at half its composite's max reflectance: B08/B8A 2500, B12 2000, visible 1500.
    dn = np.full(12, 1500.0, np.float32)
    dn[[S2L2A_BANDS.index(b) for b in ("B08", "B8A")]] = 2500
    dn[S2L2A_BANDS.index("B12")] = 2000
    for name in ("true colour", "false-colour NIR", "SWIR"):
        assert colours(display.composite(tile(dn), name)) == {(128, 128, 128)}
    np.testing.assert_array_equal(display.rgb_composite(tile(dn)), display.composite(tile(dn), "true colour"))
    # Vegetation is red in the NIR composite, not in true colour.
    r, g, b = display.composite(tile(VEGETATION), "false-colour NIR")[0, 0]
    assert r > 200 and g < 32 and b < 64


def test_ndvi_vegetation_is_green_end_and_water_is_red_end():
    green_end, red_end = display.LUTS["composite"][-1], display.LUTS["composite"][0]
    vegetation = display.composite(tile(VEGETATION), "NDVI")[0, 0]
    assert np.abs(vegetation.astype(int) - green_end).max() < 20 and vegetation[1] > vegetation[0]
    assert colours(display.composite(tile(WATER), "NDVI")) == {tuple(red_end)}  # NDVI -0.33 < -0.2


def test_nan_is_the_nodata_colour():
    dn = tile(VEGETATION)
    dn[:, 1, 1] = np.nan
    for image in [display.composite(dn, name) for name in display.COMPOSITES] + [
            display.change_map(dn, tile(WATER), "NDVI"), display.error_map(tile(WATER), dn, "SWIR")]:
        assert tuple(image[1, 1]) == display.NODATA_COLOUR
        assert tuple(image[0, 0]) != display.NODATA_COLOUR
    assert display.NODATA_COLOUR not in {tuple(c) for lut in display.LUTS.values() for c in lut.tolist()}


@pytest.mark.parametrize("name", list(display.COMPOSITES))
def test_no_change_is_neutral_and_signs_are_warm_and_cool(name):
    before = tile(WATER)
    assert colours(display.change_map(before, before, name)) == {(247, 247, 247)}  # RdBu centre
    # Water -> vegetation raises NDVI; +500 DN in every band raises reflectance by half the scale.
    after = tile(VEGETATION) if name == "NDVI" else before + 500
    warm = display.change_map(after, before, name)[0, 0].astype(int)
    cool = display.change_map(before, after, name)[0, 0].astype(int)
    assert warm[0] > warm[2] + 50 and cool[2] > cool[0] + 50


def test_change_beyond_the_scale_saturates_without_rescaling():
    before = tile(WATER)
    low, high = display.scale("change", "true colour")
    assert (low, high) == (-0.05, 0.05) and display.scale("change", "NDVI") == (-0.5, 0.5)
    saturated = display.change_map(before + 2000, before, "true colour")  # +0.2 reflectance, 4x the scale
    np.testing.assert_array_equal(saturated, display.change_map(before + 4000, before, "true colour"))
    assert colours(saturated) == {tuple(display.LUTS["change"][-1])}
    # Half the scale is halfway between neutral and the end, not stretched to the data.
    half = display.change_map(before + 250, before, "true colour")
    assert colours(half) == {tuple(display.LUTS["change"][192])}


def test_error_map_zero_and_saturated():
    reference = tile(VEGETATION)
    zero, top = display.LUTS["error"][0], display.LUTS["error"][-1]
    assert colours(display.error_map(reference, reference, "SWIR")) == {tuple(zero)}
    # |error| is averaged, so opposite-sign band errors do not cancel.
    assert colours(display.error_map(reference - 2000, reference, "SWIR")) == {tuple(top)}
    assert display.scale("error", "SWIR") == (0.0, 0.1)


def test_colour_bar_runs_low_to_high():
    bar = display.colour_bar("change", "NDVI", width=257, height=12)
    assert bar.dtype == np.uint8 and bar.shape == (26, 257, 3)
    np.testing.assert_array_equal(bar[:12, 0], np.tile(display.LUTS["change"][0], (12, 1)))
    assert tuple(bar[0, 128]) == (247, 247, 247) and tuple(bar[0, -1]) == tuple(display.LUTS["change"][-1])
    with pytest.raises(ValueError, match="no 'composite' colour scale"):
        display.colour_bar("composite", "true colour")


def test_mean_absolute_change_in_reflectance_ignores_nan():
    before = np.zeros((12, 1, 2), np.float32)
    after = before.copy()
    after[0, 0, 0], after[1, 0, 0], after[2, 0, 1] = 100, -300, np.nan
    # |changes| 100, 300 and 21 zeros over 23 finite values, in DN / 10000.
    assert display.mean_absolute_change(after, before) == pytest.approx(400 / 23 / 10000)
    assert display.mean_absolute_change(after, after) == 0.0


def test_unknown_composite_lists_the_valid_names():
    for call in (lambda: display.composite(tile(WATER), "infrared"),
                 lambda: display.change_map(tile(WATER), tile(WATER), "infrared"),
                 lambda: display.scale("error", "infrared")):
        with pytest.raises(ValueError, match="unknown composite 'infrared'") as error:
            call()
        assert all(repr(name) in str(error.value) for name in display.COMPOSITES)
