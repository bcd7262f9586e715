"""``python -m mantis_stream``: the ``mantis-stream`` console script."""

from mantis_stream.cli import main

if __name__ == "__main__":
    main()
