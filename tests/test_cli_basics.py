"""The command line's surface: version, help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wsiseg
from wsiseg import __version__
from wsiseg.cli import COMMANDS


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsiseg", *args], capture_output=True, text=True,
                          timeout=120)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_every_command_with_one_line() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name: str) -> None:
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_public_api_names_resolve() -> None:

    for name in wsiseg.__all__:
        assert getattr(wsiseg, name) is not None, name
    assert callable(wsiseg.segment_slide) and callable(wsiseg.evaluate)


def test_import_wsiseg_and_info_stay_torch_free() -> None:
    code = ("import sys, wsiseg, wsiseg.slide, wsiseg.export, wsiseg.infer; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("package", ["wsiseg.slide", "wsiseg.export", "wsiseg.io.atomic",
                                     "wsiseg.io.geojson_read", "wsiseg.io.geojson_write", "wsiseg.tiling",
                                     "wsiseg.synthetic"])
def test_packages_load_neither_dask_nor_zarr_until_they_use_them(package: str) -> None:
    """The slide reader and the exporter import zarr only to open a segmentation, never dask."""
    code = (f"import sys, {package}; "
            "loaded = [m for m in ('zarr', 'dask', 'torch', 'distributed') if m in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_library_messages_name_options_and_the_cli_shows_flags() -> None:
    """Library errors name the caller's options as Python names (``option``); the CLI turns them into its
    flags, irregular ones by its table."""
    from wsiseg.cli import as_flags
    from wsiseg.errors import option

    message = (f"pass {option('overwrite', flag=True)} or {option('slide_mpp')}; {option('simplify_um')} "
               f"and {option('max_bytes')} and `wsiseg models add NAME FILE --default`")
    assert message.startswith("pass `overwrite=True` or `slide_mpp`;")
    assert as_flags(message) == ("pass --overwrite or --slide-mpp; --simplify and --max-file-mb and "
                                 "`wsiseg models add NAME FILE --default`")
