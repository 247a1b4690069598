"""Volume files in SimpleITK's formats: NRRD (``.nrrd``), MetaImage (``.mha``, ``.mhd``).

Read and written through SimpleITK (an optional dependency, imported on use;
TorchIO installs it). :func:`read_itk` gives the voxels with the axes in ITK's
index order ``(i, j, k)`` -- the ``(X, Y, Z)`` nibabel gives for NIfTI, so a
volume and its mask read the same way whatever their format -- the file's
geometry (:class:`ItkGeometry`: spacing, origin, direction, in ITK's LPS
world) and the RAS affine nibabel would show for it. :func:`write_itk` writes
voxels with a geometry and a dtype, atomically (a ``.mhd`` header is moved
into place after its ``.raw`` data file).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import PathLike, atomic_write

#: the file name endings read and written through SimpleITK
ITK_SUFFIXES = (".nrrd", ".mha", ".mhd")

#: ITK's LPS world to NIfTI's RAS world (and back): the first two axes flip
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _simpleitk() -> Any:
    try:
        import SimpleITK
    except ImportError:
        raise ImportError(
            "reading and writing .nrrd / .mha / .mhd volumes needs SimpleITK: "
            "pip install 'histmatch_ml[itk]'"
        ) from None
    return SimpleITK


@dataclass(frozen=True)
class ItkGeometry:
    """Where a volume of a SimpleITK file lies: what writing a result like it keeps.

    Attributes
    ----------
    spacing : tuple of float
        Voxel size along ``i, j, k``.
    origin : tuple of float
        World position (LPS) of the first voxel.
    direction : tuple of float
        The 3x3 direction cosines, row-major (ITK's order).
    dtype : numpy.dtype
        The stored voxel type.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    dtype: np.dtype

    @property
    def affine(self) -> np.ndarray:
        """The ``(4, 4)`` voxel-to-world affine in NIfTI's RAS convention."""
        out = np.eye(4)
        out[:3, :3] = _LPS_TO_RAS @ np.reshape(self.direction, (3, 3)) @ np.diag(self.spacing)
        out[:3, 3] = _LPS_TO_RAS @ np.asarray(self.origin)
        return out

    @classmethod
    def from_affine(cls, affine: np.ndarray, dtype: Any) -> ItkGeometry:
        """The geometry of a RAS ``affine`` (a NIfTI volume's), for writing it in ITK's formats."""
        linear = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        direction = linear / np.where(spacing > 0, spacing, 1.0)
        origin = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
        return cls(
            tuple(map(float, spacing)),
            tuple(map(float, origin)),
            tuple(map(float, direction.ravel())),
            np.dtype(dtype),
        )


def read_itk(path: PathLike) -> tuple[np.ndarray, ItkGeometry]:
    """The voxels ``(X, Y, Z[, C])`` of a SimpleITK file and its geometry.

    ``ValueError`` if SimpleITK cannot read it or it is not a 3-D volume.
    """
    sitk = _simpleitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # (SimpleITK reports every failure so)
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ValueError(f"not a readable volume file ({reason})") from None
    if image.GetDimension() != 3:
        raise ValueError(f"a volume must have 3 dimensions; got {image.GetDimension()}")
    array = sitk.GetArrayFromImage(image)  # (k, j, i[, c])
    data = array.transpose(2, 1, 0, *range(3, array.ndim))
    data = np.ascontiguousarray(np.asarray(data, dtype=data.dtype.newbyteorder("=")))
    geometry = ItkGeometry(
        tuple(image.GetSpacing()),
        tuple(image.GetOrigin()),
        tuple(image.GetDirection()),
        data.dtype,
    )
    return data, geometry


def write_itk(
    path: PathLike, data: np.ndarray, geometry: ItkGeometry | None, *, overwrite: bool = True
) -> Path:
    """Write ``(X, Y, Z[, C])`` voxels with ``geometry``'s place and dtype (None: as they are)."""
    sitk = _simpleitk()
    path = Path(path)
    data = np.asarray(data)
    if geometry is not None:
        data = data.astype(geometry.dtype, copy=False)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    array = np.ascontiguousarray(data.transpose(2, 1, 0, *range(3, data.ndim)))
    image = sitk.GetImageFromArray(array, isVector=data.ndim == 4)
    if geometry is not None:
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    with tempfile.TemporaryDirectory(prefix="histmatch-itk-") as tmp:  # (then moved in whole)
        staged = Path(tmp) / path.name
        sitk.WriteImage(image, str(staged))
        header = staged.read_bytes()
        if path.suffix.lower() == ".mhd":  # its data file first, then the header naming it
            found = re.search(rb"ElementDataFile\s*=\s*(\S+)", header)
            if found is not None and found.group(1) != b"LOCAL":
                data_file = found.group(1).decode()
                with atomic_write(path.parent / data_file, overwrite=overwrite) as f:
                    f.write((Path(tmp) / data_file).read_bytes())
        with atomic_write(path, overwrite=overwrite) as f:
            f.write(header)
    return path
