"""The README's settings tables are the settings classes, rendered: a field added or changed without
``make readme`` fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from pulsestream import settingstable
from pulsestream.envsettings import EnvSettings
from pulsestream.settingstable import SERVICES, Service

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_every_service_has_a_table() -> None:
    assert {service.module for service in SERVICES} == {
        "pulsestream_generator.settings",
        "pulsestream_streamer.settings",
        "pulsestream_operator.settings",
    }


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.module.partition(".")[0])
def test_the_readme_table_of_each_service_matches_its_settings_class(service: Service) -> None:
    block = settingstable.extract_block(README.read_text(encoding="utf-8"))
    table = settingstable.render_table(service.title, service.load())
    assert table in block, f"README settings table for {service.title} is stale; run `make readme`"


def test_the_readme_block_is_exactly_what_make_readme_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pulsestream.settingstable", "--check", str(README)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


class DemoSettings(EnvSettings):
    env_prefix: ClassVar[str] = "DEMO_"

    port: int = Field(default=8080, description="TCP port | the one to listen on.")
    token: str = Field(default="", description="A secret.\nOn two lines.", json_schema_extra={"secret": True})


def test_a_table_row_shows_variable_default_and_a_markdown_safe_description() -> None:
    table = settingstable.render_table("demo", DemoSettings)
    assert "| `DEMO_PORT` | `8080` | TCP port \\| the one to listen on. |" in table
    assert "| `DEMO_TOKEN` | (empty) | A secret. On two lines. |" in table


def test_check_reports_drift_and_write_repairs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Settings\n\n{settingstable.BEGIN}\nold\n{settingstable.END}\n\ntail\n")
    services = (Service("demo", f"{__name__}:DemoSettings"),)
    assert settingstable.main(["--check", str(readme)], services) == 1
    assert "stale" in capsys.readouterr().err
    assert settingstable.main(["--write", str(readme)], services) == 0
    text = readme.read_text()
    assert "old" not in text and "`DEMO_PORT`" in text and text.endswith(f"{settingstable.END}\n\ntail\n")
    assert settingstable.main(["--check", str(readme)], services) == 0


def test_a_readme_without_markers_is_an_error_not_a_silent_pass(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    services = (Service("demo", f"{__name__}:DemoSettings"),)
    assert settingstable.main(["--check", str(readme)], services) == 2
