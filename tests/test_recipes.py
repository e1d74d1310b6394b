"""The packaged training recipes (wsiseg/recipes) are pipelines/*.yaml byte for byte, and load by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsiseg.errors import ConfigError
from wsiseg.recipes import DATASET_RECIPES, find_recipe, recipe_names, recipe_path
from wsiseg.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"
PACKAGED = REPO / "wsiseg" / "recipes"


def test_packaged_recipes_equal_pipelines_byte_for_byte() -> None:
    """One content, two places: edit pipelines/<name>.yaml and copy it to wsiseg/recipes/ (or back)."""
    ours = sorted(p.name for p in PIPELINES.glob("*.yaml"))
    packaged = sorted(p.name for p in PACKAGED.glob("*.yaml"))
    assert ours == packaged, "pipelines/ and wsiseg/recipes/ must hold the same YAML files"
    for name in ours:
        assert (PIPELINES / name).read_bytes() == (PACKAGED / name).read_bytes(), (
            f"pipelines/{name} and wsiseg/recipes/{name} differ: copy the edited one over the other")


def test_recipes_load_by_name_like_their_files() -> None:
    assert recipe_names() == ["bcss", "bcss-h-optimus-0", "bcss-uni", "crag", "crag-h-optimus-0", "crag-uni",
                              "glas-cpu"]
    assert set(DATASET_RECIPES.values()) <= set(recipe_names())
    for name in recipe_names():
        assert find_recipe(name) == recipe_path(name)
        by_name = TrainConfig.from_file(find_recipe(name))
        by_path = TrainConfig.from_file(PIPELINES / f"{name}.yaml")
        # class maps are named relative to the recipe: each copy finds its own sibling
        assert (by_name.class_map is None) == (by_path.class_map is None)
        if by_name.class_map:
            assert Path(by_name.class_map).is_file() and Path(by_name.class_map).parent == PACKAGED
            by_name.class_map = by_path.class_map
        assert by_name == by_path


def test_paths_stay_paths_and_unknown_names_fail_in_one_line(tmp_path: Path) -> None:
    assert find_recipe("pipelines/bcss.yaml") == Path("pipelines/bcss.yaml")
    assert find_recipe(str(tmp_path / "mine.yaml")) == tmp_path / "mine.yaml"
    packaged = "packaged: bcss, bcss-h-optimus-0, bcss-uni, crag, crag-h-optimus-0, crag-uni, glas-cpu"
    with pytest.raises(ConfigError, match=packaged):
        find_recipe("bcs")
    with pytest.raises(ConfigError, match="glas-classes"):
        recipe_path("glas-classes")  # a class map, not a recipe
