"""Pair folders, the index join, splits and the torch dataset on the bundled tiles."""

import csv
import shutil
from collections import Counter

import pytest
import torch

from gac_pipeline.data import (
    BIOMES,
    DEFAULT_DATA_DIR,
    PairDataset,
    biome_index,
    evaluation_pairs,
    list_pairs,
    normalise_split,
)


def _index_rows():
    with open(DEFAULT_DATA_DIR / "index.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_list_pairs_matches_index():
    rows = _index_rows()
    pairs = list_pairs(DEFAULT_DATA_DIR)
    assert len(pairs) == 62 == len(rows)
    assert [info.name for info in pairs] == sorted(row["pair"] for row in rows)
    expected = Counter(normalise_split(row["split"]) for row in rows)
    assert Counter(info.split for info in pairs) == expected
    assert set(expected) == {"train", "validation", "test"}
    for split in ("train", "validation", "test"):
        assert len(list_pairs(DEFAULT_DATA_DIR, split)) == expected[split]
    assert list_pairs(DEFAULT_DATA_DIR, "val") == list_pairs(DEFAULT_DATA_DIR, "validation")
    clear = sum(row["clear_land"] == "True" for row in rows)
    assert len(list_pairs(DEFAULT_DATA_DIR, clear_only=True)) == clear
    assert evaluation_pairs(DEFAULT_DATA_DIR) == list_pairs(DEFAULT_DATA_DIR, "test")


def test_pair_info_fields():
    pairs = {info.name: info for info in list_pairs(DEFAULT_DATA_DIR)}
    info = pairs["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"]  # Austria, BENv2
    assert info.s1_path.is_file() and info.s2_path.is_file()
    assert info.directory.parent.name == "benv2"
    assert (info.month, info.biome, info.source) == (6, "alpine", "BENv2")
    assert info.split == "test" and isinstance(info.clear_land, bool)
    assert pairs["S2A_MSIL2A_20170701T093031_63_35"].month == 7  # s2_date wins over s1_date
    assert {info.biome for info in pairs.values()} <= set(BIOMES) - {"unknown"}


def test_folder_without_index(tmp_path):
    source = list_pairs(DEFAULT_DATA_DIR)[:2]
    shutil.copytree(source[0].directory, tmp_path / "nested" / "a")
    (tmp_path / "b").mkdir()  # inference-only: SAR scene, no reference
    shutil.copy(source[1].s1_path, tmp_path / "b" / "S1GRD.tif")

    pairs = list_pairs(tmp_path)
    assert [info.name for info in pairs] == ["a", "b"]
    assert all(info.split is None and info.biome == "unknown" for info in pairs)
    assert pairs[1].s2_path is None and pairs[0].month is None
    assert list_pairs(tmp_path, "test") == []
    assert evaluation_pairs(tmp_path) == pairs  # no splits: every pair is for evaluation

    # An index without a split column still gives countries, but no splits.
    (tmp_path / "index.csv").write_text("pair,country,s2_date\na,Finland,20170805\n")
    pairs = list_pairs(tmp_path)
    assert (pairs[0].biome, pairs[0].month, pairs[0].split) == ("boreal", 8, None)
    assert len(evaluation_pairs(tmp_path)) == 2


def test_biome_index_and_split_names():
    assert biome_index(None) == 0 and biome_index("unknown") == 0
    assert biome_index("mediterranean") == BIOMES.index("mediterranean")
    with pytest.raises(ValueError, match="boreal"):
        biome_index("tundra")
    assert normalise_split("val") == normalise_split("Validation") == "validation"
    with pytest.raises(ValueError, match="unknown split"):
        list_pairs(DEFAULT_DATA_DIR, "holdout")


def test_pair_dataset_items(tmp_path):
    pairs = list_pairs(DEFAULT_DATA_DIR, "test")[:2]
    dataset = PairDataset(pairs, transform=lambda item: {**item, "seen": True})
    assert len(dataset) == 2
    item = dataset[1]
    assert item["s1"].shape == (2, 120, 120) and item["s1"].dtype == torch.float32
    assert item["s2"].shape == (12, 120, 120) and item["s2"].dtype == torch.float32
    assert 1 <= item["month"] <= 12 and isinstance(item["month"], int)
    assert item["biome"] == biome_index(pairs[1].biome) and item["name"] == pairs[1].name
    assert item["seen"]
    batch = next(iter(torch.utils.data.DataLoader(PairDataset(pairs), batch_size=2)))
    assert batch["s2"].shape == (2, 12, 120, 120) and batch["month"].shape == (2,)

    (tmp_path / "p").mkdir()
    shutil.copy(pairs[0].s1_path, tmp_path / "p" / "S1GRD.tif")
    with pytest.raises(ValueError, match="without S2L2A.tif: p"):
        PairDataset(list_pairs(tmp_path))
