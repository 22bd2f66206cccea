"""Command-line tools beside the gateway: ``probe`` (check a CSMS before configuring it) and
``docs_gen`` (the generated reference pages under docs/).

May import anything in the package; nothing imports tools except the CLI.
"""
