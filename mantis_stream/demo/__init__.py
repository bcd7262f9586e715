"""The zero-configuration demo: embedded broker, simulated plant, live view."""
