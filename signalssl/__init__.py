"""ECG/EEG side: readers (:mod:`signalssl.io`), layouts, the ingest-once store, windows, data kinds,
augmentations (:mod:`signalssl.transforms`) and encoders (:mod:`signalssl.encoders`)."""
