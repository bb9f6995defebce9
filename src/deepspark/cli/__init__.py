"""The ``deepspark`` command line: parses options, calls the Python API, formats results."""
