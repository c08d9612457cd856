"""Entry point of `python -m distgan` and `accelerate launch -m distgan`."""

from distgan.cli import main

if __name__ == "__main__":
    main()
