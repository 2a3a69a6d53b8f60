"""Data specs (``KIND:PATH[?key=value&...]``) and sizing encoders to data."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from pretext.atomic import atomic_write
from pretext.base import SSLData
from pretext.errors import ConfigError, DataError
from pretext.options import validate_options
from pretext.registry import DATA, ENCODERS, create_encoder


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``"medmnist3d:data/x.npz?size=28"`` into ``("medmnist3d", "data/x.npz", {"size": 28})``."""
    if ":" not in spec:
        raise ConfigError(
            f"data spec {spec!r} must read KIND:PATH, e.g. medmnist3d:path/to/adrenalmnist3d.npz; "
            f"known kinds: {', '.join(DATA.names())}"
        )
    kind, rest = spec.split(":", 1)
    path, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):  # not parse_qsl: "+" must stay "+" (regex patterns)
        key, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"data spec option {part!r} in {spec!r} must read key=value")
        options[unquote(key)] = yaml.safe_load(unquote(value))
    return kind, path, options


def load_data(spec: str, **overrides: Any) -> SSLData:
    """Load a data spec through the data-kind registry.

    The options are checked against the loader's signature (:func:`pretext.options.validate_options`): an
    unknown or old name is refused with the name to write, a ``bool``/``int``/``float`` option is validated.

    Raises:
        ConfigError: the kind is unknown (the message lists the known kinds), or a bad option.
        DataError: the path does not exist.
    """
    kind, path, options = parse_spec(spec)
    loader = DATA.get(kind)
    if path and not DATA.meta(kind).get("virtual", False) and not Path(path).exists():
        raise DataError(f"data path {path!r} (from spec {spec!r}) does not exist; check the path after '{kind}:'")
    options.update(overrides)
    options = validate_options(loader, options, f"data spec {spec!r}")
    data = loader(path, **options)
    data.source = spec  # the full spec (kind, path and options) identifies the data everywhere downstream
    return data


def encoder_for_data(name: str, data: SSLData, **kwargs: Any) -> Any:
    """Create encoder ``name`` sized for ``data`` (channels, image size / n_times, sfreq).

    Raises:
        ConfigError: the encoder is of another modality than the data.
    """
    meta = ENCODERS.meta(name)
    if meta.get("modality") and meta["modality"] != data.modality:
        raise ConfigError(
            f"encoder {name!r} is a {meta['modality']} encoder but the data is {data.modality}; "
            f"pick one of: {', '.join(ENCODERS.names(modality=data.modality))}"
        )
    factory = ENCODERS.get(name)
    params = inspect.signature(factory).parameters
    has_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
    sized = {k: v for k, v in data.encoder_kwargs().items() if has_var or k in params}
    sized.update(kwargs)
    return create_encoder(name, **sized)


def cached_generated(path: str, kind: str, opts: dict[str, Any], make: Any, n_rows: int) -> Any:
    """An array made by ``make(**opts)``, cached as ``.npy`` in folder ``path`` (none: not cached).

    The file name hashes ``opts``; the file is written to a temporary name and renamed. A cached file that
    cannot be read (truncated, zero bytes, not ``.npy``) or whose row count is not ``n_rows`` is made again,
    with a warning naming it.

    Raises:
        DataError: ``path`` exists and is not a folder.
    """
    import hashlib
    import json
    import warnings

    import numpy as np

    if not path:
        return make(**opts)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{kind} cache path {str(folder)!r} is a file; give a folder (or nothing)")
    key = hashlib.sha1(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:12]
    file = folder / f"{kind}_{key}.npy"
    if file.exists():
        try:
            x = np.load(file, mmap_mode="r", allow_pickle=False)
            problem = None if x.ndim and x.shape[0] == n_rows else f"{x.shape[0] if x.ndim else 0} rows, not {n_rows}"
        except (OSError, ValueError, EOFError) as err:  # zero bytes, a cut-off header or data, another format
            problem = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'unreadable'}"
        if problem is None:
            return x
        warnings.warn(f"cached {kind} file {file} is damaged ({problem}); making it again", stacklevel=2)
    x = make(**opts)
    atomic_write(file, lambda fh: np.save(fh, x), needed_bytes=x.nbytes)
    return x
