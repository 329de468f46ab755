"""Workflows written for other tools, turned into stormproof workflow files.

Each importer is a pure function from a parsed document to a stormproof
workflow document (plain dicts, what the YAML file will hold), so it can be
tested and reused without files; ``files`` does the reading and writing and
``render`` writes the YAML. The ``stormproof import`` commands glue them
together (``cli/import_cmd.py``).
"""

from __future__ import annotations
