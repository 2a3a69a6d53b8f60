"""MONAI bundle integration: export checkpoints as bundles, build bundle networks, import bundle weights.

* :func:`export_bundle` -- a medssl checkpoint -> a MONAI bundle folder (``sslbench export-bundle``);
* :func:`build_network` -- the ``_target_`` bundle configs use to build any registered encoder (+ head);
  with a ``grid``, a :class:`GridPooled` that pools a patch-trained encoder over whole inputs of any shape;
* :func:`import_bundle` / :func:`encoder_from_bundle` -- a MONAI bundle's weights -> one of our
  encoders, with a report of matched/missing/unexpected keys (``sslbench import-bundle``);
* :func:`verify_bundle` -- MONAI's verify_metadata (offline schema), verify_net_in_out, ConfigParser
  and TorchScript checks on a bundle folder;
* :func:`save_classifier_checkpoint` -- how a fine-tuned classifier is saved for export.
"""

from pretext.bundle.export import export_bundle
from pretext.bundle.metadata import SCHEMA_PATH, SCHEMA_URL
from pretext.bundle.networks import BundleNetwork, GridPooled, build_network
from pretext.bundle.source import save_classifier_checkpoint

__all__ = ["SCHEMA_PATH", "SCHEMA_URL", "BundleNetwork", "GridPooled", "build_network", "encoder_from_bundle", "export_bundle",
           "import_bundle", "save_classifier_checkpoint", "verify_bundle"]


def __getattr__(name: str) -> object:  # lazy: importing the package stays cheap
    if name in ("encoder_from_bundle", "import_bundle"):
        from pretext.bundle import importer

        return getattr(importer, name)
    if name == "verify_bundle":
        from pretext.bundle.verify import verify_bundle

        return verify_bundle
    raise AttributeError(name)
