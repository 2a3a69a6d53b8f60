"""Modality-agnostic pretext tasks (joint embedding): one file each, registered with ``modality="any"`` and found
by scanning this package (:data:`pretext.registry.CORE_PACKAGES`)."""
