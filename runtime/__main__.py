"""``python -m runtime``: the same as the ``runtime`` command."""

from .cli import main

if __name__ == "__main__":
    main()
