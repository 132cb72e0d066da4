"""Development tooling shared by scripts/ and tests/: not part of the installed package."""
