"""3D volume side of medssl: readers, preprocessing, cache, transforms and encoders.

Submodules are imported on demand (``volssl.io``, ``volssl.data``, ``volssl.transforms``,
``volssl.encoders``) so that ``import volssl`` stays cheap.
"""
