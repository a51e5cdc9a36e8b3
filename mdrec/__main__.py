"""`python -m mdrec`: the `mdrec` command where its console script is not on PATH (e.g. on a cluster node)."""

from mdrec.cli import main

if __name__ == "__main__":
    main()
