"""``python -m dps_fast``: the same command line as the ``dps-fast`` script."""

from .cli import main

if __name__ == "__main__":
    main()
