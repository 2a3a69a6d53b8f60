"""Signal pretext tasks: ``cpc`` (contrastive predictive coding) and ``pclr`` (patient contrastive)."""

from pretext.signal import cpc, pclr  # noqa: F401  (registers the tasks)
from pretext.signal.cpc import CPC, cpc_loss, cpc_loss_loop
from pretext.signal.pclr import PCLR, PatientPairs

__all__ = ["CPC", "PCLR", "PatientPairs", "cpc_loss", "cpc_loss_loop"]
