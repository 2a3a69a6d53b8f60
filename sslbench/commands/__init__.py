"""``sslbench`` sub-commands, one module each (discovered by :mod:`sslbench.cli`)."""
