"""``python -m unpact`` (and ``torchrun ... -m unpact audit ...``): the command line."""

from unpact.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
