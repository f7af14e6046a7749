"""corral's benchmark suite (issue 9): `bench/run` or `python -m bench`; see bench/README.md."""
