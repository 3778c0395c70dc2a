"""Support code the tests share: in-memory ports, labs of hosts in namespaces, helpers.

``tests`` is on ``sys.path`` (pyproject.toml's ``pythonpath``), so a test imports
these as ``support.<module>``.
"""
