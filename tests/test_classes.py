"""Class names follow QuPath's rules wherever classes are defined: one-line errors naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsiseg.classes import ClassList, check_class_name
from wsiseg.cli import main
from wsiseg.errors import ClassMismatchError, DatasetError
from wsiseg.train.datasets.classmap import read_class_map, read_mapping_file

BAD_NAMES = [("", "must not be empty"), ("   ", "must not be empty"), ("Tumor\nbed", "line break"),
             ("Tumor\r", "line break"), ("Tumor: invasive", "sub-class")]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_class_list_refuses_names_qupath_cannot_use(name: str, message: str) -> None:
    with pytest.raises(ClassMismatchError, match=message):
        ClassList.from_names(["Stroma", name])


@pytest.mark.parametrize("name", ["Tumor", "Tumor (invasive)", "Nekrose ä", "lymphocytic infiltrate",
                                  "Region*"])
def test_names_qupath_accepts(name: str) -> None:
    assert check_class_name(name) == name
    assert ClassList.from_names([name]).names == [name]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_class_map_files_name_the_file(tmp_path: Path, name: str, message: str) -> None:
    import json

    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": [{"name": "background", "value": 0}, {"name": name, "value": 1}]}))
    with pytest.raises(DatasetError, match=message) as info:
        read_class_map(path)
    assert str(path) in str(info.value)
    grouping = tmp_path / "groups.json"
    grouping.write_text(json.dumps({"classes": {"tumor": [1], name: [2]}}))
    with pytest.raises(DatasetError, match=message):
        read_mapping_file(grouping)


def test_train_with_a_bad_class_map_is_a_one_line_error(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    class_map = tmp_path / "classes.yaml"
    class_map.write_text("classes:\n  - {name: 'Tumor: invasive', value: 1}\n"
                         "  - {name: background, value: 0}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--class-map",
              str(class_map), "--out", str(tmp_path / "run"), "--preset", "tiny"])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "sub-class" in err and "classes.yaml" in err
