"""``python -m numgrad``: the same entry point as the ``numgrad`` script."""

from numgrad.cli import main

if __name__ == "__main__":
    main()
