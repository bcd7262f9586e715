"""The zero-configuration demo: embedded broker, simulated plant, live view."""

#: The folder (under the current directory) holding everything the demo writes: worker log, traces, Faust's data.
DEMO_DIR = "mantis-demo"
