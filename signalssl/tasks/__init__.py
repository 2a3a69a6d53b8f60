"""Signal pretext tasks: ``cpc`` (contrastive predictive coding) and ``pclr`` (patient contrastive)."""

from signalssl.tasks import cpc, pclr  # noqa: F401  (registers the tasks)
from signalssl.tasks.cpc import CPC, cpc_loss
from signalssl.tasks.pclr import PCLR, PatientPairs

__all__ = ["CPC", "PCLR", "PatientPairs", "cpc_loss"]
