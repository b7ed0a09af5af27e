"""`python -m million_ird.cli`."""

from million_ird.cli import app

app()
