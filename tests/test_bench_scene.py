"""The scene benchmark's pieces (issue 15): its quality mosaics and the settings its rows switch."""

import numpy as np
import rasterio
import torch

from bench import common, scene
from gac_pipeline.io import read_s1, read_s2, writer
from gac_pipeline.presets import load_preset
from gac_pipeline.stages import heads


def test_quality_mosaics_lay_out_each_test_tile_once(tmp_path):
    scene.write_quality_mosaics(tmp_path / "sar.tif", tmp_path / "reference.tif")
    pairs = common.test_pairs()  # imported by name, pytest would collect it as a test
    with rasterio.open(tmp_path / "sar.tif") as sar, rasterio.open(tmp_path / "reference.tif") as reference:
        assert (sar.count, reference.count) == (2, 12)
        assert sar.shape == reference.shape == (360, 840)  # 21 tiles of 120 px, 7 wide
        assert not sar.tags().get("ACQUISITION_DATE")  # the tiles' months differ: none is claimed
        for index in (0, 8, 20):  # first, row 1 column 1, last
            window = rasterio.windows.Window(index % 7 * 120, index // 7 * 120, 120, 120)
            np.testing.assert_array_equal(sar.read(window=window), read_s1(pairs[index].s1_path).data)
            np.testing.assert_array_equal(reference.read(window=window), read_s2(pairs[index].s2_path).data)


def test_apply_sets_what_a_row_names(monkeypatch):
    for module, name in ((writer, "COG_OPTIONS"), (writer, "PARTIAL_OPTIONS"), (writer, "OVERVIEWS_FIRST"),
                         (heads, "MLP_CHUNK"), (heads, "REORDER_AT_INFERENCE")):
        monkeypatch.setattr(module, name, getattr(module, name))  # put back after the test
    threads = torch.get_num_threads()
    pipeline = load_preset("mini")
    try:
        scene.apply(scene.ROWS["before"] | {"overlap": 8, "threads": 1}, pipeline)
        config = pipeline.config
        assert (config.tile_size, config.tile_overlap, config.window_batch) == (128, 8, 1)
        assert pipeline._window_workers(("1", "2", "3")) == 1
        assert writer.COG_OPTIONS["COMPRESS"] == "DEFLATE" and writer.PARTIAL_OPTIONS["compress"] == "deflate"
        assert not writer.OVERVIEWS_FIRST
        assert heads.MLP_CHUNK == 0 and not heads.REORDER_AT_INFERENCE
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
