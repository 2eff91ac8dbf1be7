"""`python -m retention` runs the CLI."""

from retention.cli import main

main()
