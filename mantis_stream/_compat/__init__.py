"""Where mantis-stream reaches into a library's private API, one module per library.

Why a package of its own: these are the only lines that depend on a library's
internals (attributes with a leading underscore, methods replaced at run
time), so an upgrade can break them without any public API changing.  Each
module declares the versions it was tested with; :func:`.check.check_tested_versions`
runs at worker start and stops the worker in one line naming the library and
its version when an installed one is outside them, instead of letting a shim
misbehave silently.  The shims themselves raise
:class:`.versions.UntestedVersion` when what they reach for is missing.
"""
