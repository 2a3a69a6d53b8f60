"""MONAI bundle integration: export checkpoints as bundles, build bundle networks, import bundle weights.

* :func:`export_bundle` -- a medssl checkpoint -> a MONAI bundle folder (``sslbench export-bundle``);
* :func:`build_network` -- the ``_target_`` bundle configs use to build any registered encoder (+ head);
* :func:`import_bundle` -- a MONAI bundle's weights -> one of our encoders, with a key report
  (``sslbench import-bundle``).
"""

from volssl.bundle.export import export_bundle
from volssl.bundle.metadata import SCHEMA_PATH, SCHEMA_URL
from volssl.bundle.networks import BundleNetwork, build_network

__all__ = ["SCHEMA_PATH", "SCHEMA_URL", "BundleNetwork", "build_network", "export_bundle"]
