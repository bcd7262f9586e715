"""The ``mantis-stream`` console script: Faust's own CLI for our app."""


def main() -> None:
    from mantis_stream import app

    app.main()


if __name__ == "__main__":
    main()
