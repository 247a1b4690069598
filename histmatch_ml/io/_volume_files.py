"""Volume files: NIfTI (``.nii``, ``.nii.gz``) through nibabel (the ``[medical]`` extra),
NRRD and MetaImage (``.nrrd``, ``.mha``, ``.mhd``) through SimpleITK (the ``[itk]`` extra).

:func:`read_volume` reads a file into a :class:`VolumeData` (the voxel array in
the file's own dtype, its affine and header); :func:`write_volume` writes a
result with the affine, header and dtype of the volume it came from, through
:func:`~histmatch_ml.io.atomic_write`; :func:`read_volume_mask` reads a mask
volume (non-zero voxels). The array's axes are the file's (``(X, Y, Z)``, or
``(X, Y, Z, C)`` for a 4-D file, whose last axis is read as channels); they
are the ``(D, H, W)`` of ``spatial_dims=3``; SimpleITK's files are read in
the same (ITK index) order, see :mod:`histmatch_ml.io._itk_files`. nibabel and
SimpleITK are imported on use.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._atomic import PathLike, atomic_write
from ._itk_files import ITK_SUFFIXES, ItkGeometry, read_itk, write_itk

#: the file name endings read as NIfTI volumes
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: the file name endings read as volumes
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def is_volume_file(path: Any) -> bool:
    """True for a path whose name ends in a :data:`VOLUME_SUFFIXES` ending (any case).

    Examples
    --------
    >>> from histmatch_ml.io._volume_files import is_volume_file
    >>> is_volume_file("sub-01_T1w.nii.gz"), is_volume_file("photo.png")
    (True, False)
    """
    if not isinstance(path, (str, os.PathLike)):
        return False
    name = os.fspath(path).lower()
    return name.endswith(VOLUME_SUFFIXES)


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError:
        raise ImportError(
            "reading and writing NIfTI volumes needs nibabel: pip install 'histmatch_ml[medical]'"
        ) from None
    return nibabel


@dataclass
class VolumeData:
    """A volume read from a file, and what writing a result like it needs.

    Attributes
    ----------
    data : ndarray
        The voxels, ``(X, Y, Z)`` or ``(X, Y, Z, C)``, in the file's dtype
        (floats when the header scales the stored values).
    affine : ndarray of shape (4, 4)
        The voxel-to-world affine.
    header : nibabel.nifti1.Nifti1Header or ItkGeometry
        A NIfTI file's header (its data type, units, description, ...); for
        SimpleITK's formats the file's spacing, origin, direction and voxel
        type.
    path : pathlib.Path
        The file read.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: Path


def gunzip(data: bytes) -> bytes:
    """The decompressed bytes of gzip ``data`` (every member, CRC checked by zlib).

    One zlib call per member on the whole buffer (it releases the GIL), where
    a gzip file object inflates block by block in Python calls: the "fit, 10
    volumes" row of the volumes benchmark reads ``.nii.gz`` files this way.
    ``EOFError`` for a truncated stream, ``zlib.error`` for corrupt data.

    Examples
    --------
    >>> import gzip
    >>> from histmatch_ml.io._volume_files import gunzip
    >>> gunzip(gzip.compress(b"voxels") + gzip.compress(b"!"))
    b'voxels!'
    """
    members = []
    while data:
        inflate = zlib.decompressobj(wbits=31)  # (31: a gzip header and trailer)
        members.append(inflate.decompress(data))
        if not inflate.eof:
            raise EOFError("the gzip stream ends before its end-of-stream marker")
        data = inflate.unused_data.lstrip(b"\0")  # (padding between members, as gzip)
    if not members:
        raise EOFError("the gzip file is empty")
    return members[0] if len(members) == 1 else b"".join(members)


def read_volume(path: PathLike) -> VolumeData:
    """Read a volume file: NIfTI (``.nii`` / ``.nii.gz``), NRRD or MetaImage.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    VolumeData
        The voxels in the file's dtype (scaled to floats only when the header
        has a scale factor), the affine and the header.

    Raises
    ------
    ValueError
        If the file is not a 3-D or 4-D NIfTI volume (or a 3-D SimpleITK
        image of one or more components).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml.io import read_volume, write_volume
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t1.nii.gz"
    >>> _ = write_volume(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    >>> vol = read_volume(path)
    >>> vol.data.shape, vol.data.dtype
    ((2, 3, 4), dtype('int16'))
    """
    path = Path(path)
    if path.name.lower().endswith(ITK_SUFFIXES):
        data, geometry = read_itk(path)
        return VolumeData(data, geometry.affine, geometry, path)
    nib = _nibabel()
    try:
        if path.name.lower().endswith(".gz"):  # one decompression of the whole file
            raw = gunzip(path.read_bytes())
            nifti2 = raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540
            image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)
        else:
            image = nib.load(os.fspath(path))
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"not a readable NIfTI volume ({exc})") from None
    data = np.asanyarray(image.dataobj)
    if data.ndim not in (3, 4):
        raise ValueError(f"a volume must have 3 or 4 dimensions; got shape {data.shape}")
    # in native byte order (files may be big-endian), so the dtype is a plain one, and in
    # C order, as the kernels read volumes (the copy then happens where the file is read:
    # in the reading threads of iter_volumes and of a fit with n_jobs)
    data = np.ascontiguousarray(np.asarray(data, dtype=data.dtype.newbyteorder("=")))
    return VolumeData(data, np.asarray(image.affine), image.header, path)


def iter_volumes(
    paths: Iterable[PathLike], *, dtype: DTypeLike | None = None, n_jobs: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the voxel arrays of volume files in order, read ``n_jobs`` at a time.

    A stream for :meth:`HistogramMatcher.fit <histmatch_ml.HistogramMatcher.fit>`
    (``spatial_dims=3``) that reads the next files in threads while the
    current ones are learned from, and can give files stored in different
    dtypes one dtype (TorchIO reads every volume as float32), which a fit
    needs. Memory holds at most ``n_jobs + 1`` volumes.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The volume files (NIfTI, NRRD, MetaImage).
    dtype : dtype, optional
        Cast every volume to it (``"float32"`` keeps int16/uint16 values
        exactly); None keeps each file's own dtype.
    n_jobs : int, optional
        Files read at the same time, in threads (decompression releases the
        GIL); None means 1 and -1 all cores.

    Yields
    ------
    ndarray
        The voxels of each file, ``(X, Y, Z)`` or ``(X, Y, Z, C)``.

    Raises
    ------
    ValueError
        If a file is not a readable volume (naming the file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml.io import iter_volumes, write_volume
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> paths = [write_volume(folder / "a.nii.gz", np.ones((2, 3, 4), np.int16)),
    ...          write_volume(folder / "b.nii.gz", np.ones((2, 3, 4), np.float32))]
    >>> [v.dtype.name for v in iter_volumes(paths, dtype="float32", n_jobs=2)]
    ['float32', 'float32']
    """
    from joblib import effective_n_jobs

    from .._images import read_ahead

    cast = None if dtype is None else np.dtype(dtype)
    n_threads = 1 if n_jobs in (None, 1) else effective_n_jobs(n_jobs)

    def read(path: PathLike) -> np.ndarray:
        data = read_volume(path).data
        return data if cast is None else data.astype(cast, copy=False)

    for path, pending in read_ahead(iter(paths), n_threads, read):
        try:
            data = read(path) if pending is None else pending.result()
        except ValueError as exc:
            raise ValueError(f"cannot read {os.fspath(path)!r}: {exc}") from None
        yield data


def read_volume_mask(path: PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A boolean mask volume: the non-zero voxels of a volume file.

    ``shape``, if given, is the ``(X, Y, Z)`` the mask must have (its volume's).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml.io import read_volume_mask, write_volume
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "brain.nii"
    >>> _ = write_volume(path, np.eye(3, dtype=np.uint8)[None])
    >>> int(read_volume_mask(path, (1, 3, 3)).sum())
    3
    """
    data = read_volume(path).data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if shape is not None and data.shape != tuple(shape):
        raise ValueError(f"the mask must have its volume's shape {tuple(shape)}; got {data.shape}")
    return data != 0


def write_volume(
    path: PathLike, data: np.ndarray, like: VolumeData | None = None, *, overwrite: bool = True
) -> Path:
    """Write ``data`` as a volume file with the geometry, header and dtype of ``like``.

    The format follows ``path``'s ending: NIfTI (``.nii.gz`` is
    gzip-compressed without a timestamp, so the same volume gives the same
    bytes), or NRRD / MetaImage through SimpleITK (spacing, origin and
    direction kept; a ``like`` of the other family gives its affine and
    dtype). The write is atomic.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write; ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.mhd``
        (with its ``.raw`` data file beside it).
    data : ndarray
        The voxels, ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
    like : VolumeData, optional
        The volume ``data`` came from; its affine and header (data type,
        scaling, units, description, ...) are kept. None: an identity affine
        and a header for ``data``'s dtype.
    overwrite : bool, default=True
        Replace an existing file (else ``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    from_itk = like is not None and isinstance(like.header, ItkGeometry)
    if path.name.lower().endswith(ITK_SUFFIXES):
        if like is None or from_itk:
            geometry = None if like is None else like.header
        else:
            geometry = ItkGeometry.from_affine(like.affine, like.header.get_data_dtype())
        return write_itk(path, data, geometry, overwrite=overwrite)
    nib = _nibabel()
    if like is None:
        image = nib.Nifti1Image(np.asarray(data), np.eye(4))
    elif from_itk:
        image = nib.Nifti1Image(np.asarray(data), like.affine)
        image.set_data_dtype(like.header.dtype)
    else:
        header = like.header.copy()
        image = nib.Nifti1Image(np.asarray(data), like.affine, header)
        image.set_data_dtype(like.header.get_data_dtype())
    payload = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(payload)
    return path
