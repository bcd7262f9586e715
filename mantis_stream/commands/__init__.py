"""The ``mantis-stream`` commands: offline ones on :data:`mantis_stream.cli.group`, the others on the Faust app."""
