"""``python -m replicator``: the same CLI as the ``replicator`` command."""

from replicator.cli import main

if __name__ == "__main__":
    main()
