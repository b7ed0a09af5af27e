"""The README's test command and .ci/run must stay the same command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```")[1::2]
    return [b.strip() for b in blocks if "pip install" in b and "torch==" in b]


def test_ci_runs_readme_test_command_verbatim() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci_lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    assert commands[1] in ci_lines
    assert commands[0].endswith("million-ird demo")
