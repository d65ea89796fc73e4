"""Band names and index sets shared by I/O, metrics and the stages."""

# TerraMind's S2L2A order (also the order of the bundled S2L2A.tif files).
S2L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1GRD_BANDS = ("VV", "VH")

# The four 10 m bands all headline metrics are computed on.
METRIC_BANDS = ("B02", "B03", "B04", "B08")
METRIC_BAND_INDICES = tuple(S2L2A_BANDS.index(b) for b in METRIC_BANDS)

# Prithvi-EO-2.0 was trained on these six HLS bands (blue, green, red, narrow NIR, SWIR1, SWIR2).
HLS_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")
HLS_BAND_INDICES = tuple(S2L2A_BANDS.index(b) for b in HLS_BANDS)

# Indices of red, green, blue in S2L2A order: composites and luminance must use these, not 0,1,2.
RGB_BAND_INDICES = (S2L2A_BANDS.index("B04"), S2L2A_BANDS.index("B03"), S2L2A_BANDS.index("B02"))

# S2L2A digital numbers are reflectance x 10000.
REFLECTANCE_SCALE = 10000.0

# Centre wavelengths (nm) of the S2L2A bands, in S2L2A_BANDS order (Sentinel-2A): x of a spectrum chart.
BAND_CENTRES_NM = (443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2190)
