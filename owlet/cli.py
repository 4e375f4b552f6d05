"""The ``owlet`` command line."""

import argparse

__all__ = ["main"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="owlet", description=__doc__)
    parser.parse_args(argv)


if __name__ == "__main__":
    main()
