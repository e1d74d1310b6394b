"""wsiseg.registry and `wsiseg models`: names, the default, base files, resolution, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wsiseg.cli import as_flags, main
from wsiseg.errors import CheckpointError, ConfigError, OutputError
from wsiseg.io.hashing import file_sha256
from wsiseg.registry import (
    NO_MODEL_MESSAGE,
    REGISTRY_FILE,
    ModelSource,
    Registry,
    config_dir,
    resolve_model,
    training_weights,
)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty WSISEG_HOME for this test."""
    path = tmp_path / "home"
    monkeypatch.setenv("WSISEG_HOME", str(path))
    return path


@pytest.fixture
def registered(home: Path, slim_tiny_model: Path, tiny_official_files: dict[str, Path]) -> Registry:
    """The slim tiny model registered as default 'tiny', with its two base files."""
    registry = Registry()
    for file in tiny_official_files.values():
        registry.register_base_file(file)
    registry.add("tiny", slim_tiny_model, default=True)
    return registry


def test_config_dir_follows_wsiseg_home_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WSISEG_HOME", str(tmp_path / "h"))
    assert config_dir() == tmp_path / "h"
    assert Registry().path == tmp_path / "h" / REGISTRY_FILE
    if sys.platform in ("win32", "darwin"):
        return
    monkeypatch.delenv("WSISEG_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "wsiseg"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert config_dir() == tmp_path / "user" / ".config" / "wsiseg"


def test_register_resolve_and_remove(registered: Registry, slim_tiny_model: Path,
                                     tiny_official_files: dict[str, Path], tmp_path: Path) -> None:
    bases = {b.kind: b for b in registered.base_files()}
    assert (bases["sam"].encoder, bases["hipt"].encoder) == ("sam_tiny", "hipt_tiny")
    assert bases["sam"].sha256 == file_sha256(tiny_official_files["sam"])
    [model] = registered.models()
    assert (model.name, model.path, registered.default) == ("tiny", slim_tiny_model, "tiny")
    assert model.sha256 == file_sha256(slim_tiny_model) and set(model.base) == {"sam", "hipt"}
    # one human-readable JSON file, no temporary files left beside it
    text = registered.path.read_text()
    assert json.loads(text)["default"] == "tiny" and "\n  " in text
    assert sorted(p.name for p in registered.home.iterdir()) == [REGISTRY_FILE, REGISTRY_FILE + ".lock"]

    expected = (slim_tiny_model, tiny_official_files["sam"], tiny_official_files["hipt"])
    for spec in (None, "tiny", str(slim_tiny_model)):  # the default, the name, the path
        r = resolve_model(spec)
        assert (r.path, r.sam_checkpoint, r.hipt_checkpoint) == expected, spec
    assert resolve_model(None).source is ModelSource.DEFAULT and resolve_model("tiny").name == "tiny"
    # given files win over registered ones
    other = tmp_path / "given.pth"
    assert resolve_model("tiny", sam_checkpoint=other).sam_checkpoint == other

    registered.remove("tiny")
    assert registered.models() == [] and registered.default is None
    with pytest.raises(ConfigError, match="no model given"):
        resolve_model(None)


def test_invalid_and_taken_names(registered: Registry, slim_tiny_model: Path) -> None:
    for name in ("a/b", "null", "x.wsiseg", "-x", ""):
        with pytest.raises(ConfigError, match="invalid model name"):
            registered.add(name, slim_tiny_model)
    with pytest.raises(ConfigError, match=r"already registered.*`replace=True`"):
        registered.add("tiny", slim_tiny_model)
    registered.add("tiny", slim_tiny_model, replace=True)


def test_a_failed_write_leaves_the_registry_as_it_was(registered: Registry, slim_tiny_model: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = registered.path.read_bytes()

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wsiseg.io.atomic.os.replace", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        registered.add("other", slim_tiny_model)
    assert registered.path.read_bytes() == before
    assert sorted(p.name for p in registered.home.iterdir()) == [REGISTRY_FILE, REGISTRY_FILE + ".lock"]


def test_models_cli(home: Path, slim_tiny_model: Path, tiny_official_files: dict[str, Path],
                    capsys: pytest.CaptureFixture[str]) -> None:
    # a slim model whose base files are not registered yet: registered, with a note naming add-base
    code, out, err = _cli(["models", "add", "tiny", str(slim_tiny_model), "--default"], capsys)
    assert code == 0 and "registered model tiny" in out and "as the default" in out
    assert err.count("wsiseg: note:") == 2 and "wsiseg models add-base" in err
    # official weights given to `add` by mistake: told to use add-base
    code, _, err = _cli(["models", "add", "sam", str(tiny_official_files["sam"])], capsys)
    assert code == 1 and "wsiseg models add-base" in err and err.count("\n") == 1
    # a model given to add-base by mistake
    code, _, err = _cli(["models", "add-base", str(slim_tiny_model)], capsys)
    assert code == 1 and "wsiseg model checkpoint" in err and err.count("\n") == 1
    code, out, _ = _cli(["models", "add-base", *map(str, tiny_official_files.values())], capsys)
    assert code == 0 and "SAM weights (sam_tiny)" in out and "HIPT weights (hipt_tiny)" in out
    code, out, _ = _cli(["models", "list"], capsys)
    assert code == 0 and str(home / REGISTRY_FILE) in out
    assert "* tiny" in out and "needs hipt+sam" in out and "sam_tiny" in out and "hipt_tiny" in out
    code, out, _ = _cli(["models", "default"], capsys)
    assert out.strip() == "tiny"
    code, _, _ = _cli(["models", "default", "--unset"], capsys)
    assert Registry().default is None
    code, _, _ = _cli(["models", "default", "tiny"], capsys)
    assert Registry().default == "tiny"
    sha = file_sha256(tiny_official_files["hipt"])
    code, out, _ = _cli(["models", "remove-base", sha[:10]], capsys)
    assert code == 0 and [b.kind for b in Registry().base_files()] == ["sam"]
    code, out, _ = _cli(["models", "remove", "tiny"], capsys)
    assert code == 0 and Registry().models() == [] and slim_tiny_model.is_file()
    code, _, err = _cli(["models", "remove", "tiny"], capsys)
    assert code == 1 and "no registered model 'tiny'" in err


@pytest.mark.parametrize(("case", "message"), [
    ("nothing", as_flags(NO_MODEL_MESSAGE)),
    ("unknown", "unknown model 'nope': not a registered name (registered: tiny)"),
    ("corrupt", "is corrupt (not JSON"),
    ("corrupt_layout", "is corrupt ('models' must be a mapping"),
    ("unregistered_base", "SAM weights 'sam_tiny_official.pth'"),
    ("env_missing", "WSISEG_MODEL="),
    ("file_gone", "points to"),
])
def test_model_errors_are_one_line(case: str, message: str, registered: Registry, slim_tiny_model: Path,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["segment", "slide.svs", "--out", str(tmp_path / "o.zarr")]
    if case == "nothing":
        registered.set_default(None)
    elif case == "unknown":
        args += ["--model", "nope"]
    elif case == "corrupt":
        registered.path.write_text('{"format": "wsiseg-registry", "models": {')
    elif case == "corrupt_layout":
        registered.path.write_text('{"format": "wsiseg-registry", "format_version": 1, "models": [], '
                                   '"base_files": []}')
    elif case == "unregistered_base":  # a slim model whose base files are neither given nor registered
        for base in registered.base_files():
            registered.remove_base_file(str(base.path))
        args += ["--model", str(slim_tiny_model)]
    elif case == "env_missing":
        monkeypatch.setenv("WSISEG_MODEL", str(tmp_path / "gone.wsiseg"))
    elif case == "file_gone":
        copy = tmp_path / "copy.wsiseg"
        copy.write_bytes(slim_tiny_model.read_bytes())
        registered.add("tiny", copy, default=True, replace=True)
        copy.unlink()
    code, _, err = _cli(args, capsys)
    assert code == 1 and err.startswith("wsiseg: error:") and err.count("\n") == 1, err
    assert message in err, err
    if case == "nothing":  # the three ways of giving a model
        assert "--model" in err and "WSISEG_MODEL" in err and "--default" in err
    if case == "unregistered_base":
        assert "--sam-checkpoint" in err and "wsiseg models add-base" in err


def test_base_files_override_and_checks(registered: Registry, slim_tiny_model: Path,
                                        tiny_official_files: dict[str, Path]) -> None:
    # a registered base file that vanished
    sam = tiny_official_files["sam"]
    moved = sam.with_name("moved.pth")
    sam.rename(moved)
    try:
        with pytest.raises(CheckpointError, match=r"registered SAM weights .* are missing"):
            resolve_model("tiny")
        # --sam-checkpoint overrides the registry (so the missing registered file does not matter)
        assert resolve_model("tiny", sam_checkpoint=moved).sam_checkpoint == moved
        # registering the moved file (same sha256) updates its path
        registered.register_base_file(moved)
        assert resolve_model("tiny").sam_checkpoint == moved
    finally:
        moved.rename(sam)
    registered.register_base_file(sam)
    assert len(registered.base_files()) == 2


def test_training_weights_by_encoder(registered: Registry, tiny_official_files: dict[str, Path]) -> None:
    tiny = training_weights({"sam": "sam_tiny", "hipt": "hipt_tiny"}, registry=registered)
    assert (tiny.sam_checkpoint, tiny.hipt_checkpoint, tiny.missing) == (
        tiny_official_files["sam"], tiny_official_files["hipt"], ())
    paper = training_weights({"sam": "sam_vit_b", "hipt": "hipt_vit_s"}, registry=registered)
    assert [w.file for w in paper.missing] == ["sam_vit_b_01ec64.pth", "vit256_small_dino.pth"]
    sam_only = training_weights({"sam": "sam_vit_b", "hipt": None}, sam_checkpoint="x.pth",
                                registry=registered)
    assert (sam_only.sam_checkpoint, sam_only.hipt_checkpoint, sam_only.missing) == (Path("x.pth"), None, ())


_ADDER = """
import sys, time
from pathlib import Path
from wsiseg.registry import Registry
home, model, worker, count, go = sys.argv[1:]
import wsiseg.model.checkpoint  # torch loaded before the start signal, so the workers overlap
while not Path(go).exists():
    time.sleep(0.005)
registry = Registry(home)
for i in range(int(count)):
    registry.add(f"w{worker}-{i}", model)
"""


def test_concurrent_adds_lose_nothing(tmp_path: Path, slim_tiny_model: Path) -> None:
    """Processes adding models at the same time: every name they added is registered afterwards."""
    import subprocess
    import time

    home, go = tmp_path / "shared-home", tmp_path / "go"
    workers, count = 4, 12
    args = [str(home), str(slim_tiny_model)]
    procs = [subprocess.Popen([sys.executable, "-c", _ADDER, *args, str(w), str(count), str(go)],
                              stderr=subprocess.PIPE, text=True) for w in range(workers)]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = {m.name for m in Registry(home).models()}
    assert names == {f"w{w}-{i}" for w in range(workers) for i in range(count)}


def test_a_registry_from_a_newer_wsiseg_is_refused(home: Path) -> None:
    home.mkdir(parents=True)
    (home / REGISTRY_FILE).write_text('{"format": "wsiseg-registry", "format_version": 99, "models": {}, '
                                      '"base_files": []}')
    with pytest.raises(ConfigError, match=r"format version 99, newer than this wsiseg supports \(1\)"):
        Registry().models()
