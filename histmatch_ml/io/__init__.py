"""Model files (one ``.npz``, no pickle) and image files for the command line.

Four parts, one submodule each; everything public is importable from here.

Model files (``_model``)
    :func:`save_model` writes any fitted estimator of this package to one
    ``.npz`` archive that ``numpy.load(path, allow_pickle=False)`` opens: the
    fitted arrays as named entries plus a JSON metadata entry (:data:`META_KEY`)
    with the format (:data:`MODEL_FORMAT`, :data:`FORMAT_VERSION`), the class,
    its parameters, the scalar fitted attributes and a SHA-256
    :func:`fingerprint`. :func:`load_model` checks the whole file before it
    builds the estimator, and leaves the consistency of the fitted state to the
    estimator class; :func:`model_summary` is what ``histmatch inspect`` prints.
    Nothing in a file is executed or unpickled.

Image files (``_image_files``)
    :func:`read_image` reads any Pillow-readable file into :class:`ImageData`,
    keeping 16-bit data 16-bit and the decompression-bomb limit on;
    :func:`write_image` writes a result the way its input was stored;
    :func:`read_mask` reads a boolean mask; :func:`image_extensions` and
    :func:`format_for_path` map file suffixes to formats.

Volume files (``_volume_files``)
    :func:`read_volume` reads a NIfTI file (``.nii``, ``.nii.gz``, through
    nibabel: the ``[medical]`` extra), or an NRRD / MetaImage file
    (``.nrrd``, ``.mha``, ``.mhd``, through SimpleITK: the ``[itk]`` extra),
    into :class:`VolumeData` (voxels in the file's dtype, affine, header);
    :func:`write_volume` writes a result with the affine (geometry), header
    and dtype of its input; :func:`read_volume_mask` reads
    a mask volume; :func:`iter_volumes` streams many files to a fit, read in
    threads and cast to one dtype.

Atomic writes (``_atomic``)
    :func:`atomic_write` writes to a temporary file in the destination
    directory, ``fsync``-s it and moves it into place, so an interrupted run
    never leaves a half-written or temporary file behind; model and image
    files are both written through it.
"""

from ._atomic import PathLike, atomic_write
from ._image_files import (
    ImageData,
    format_for_path,
    image_extensions,
    read_image,
    read_mask,
    write_image,
)
from ._model import (
    FORMAT_VERSION,
    META_KEY,
    MODEL_FORMAT,
    fingerprint,
    load_model,
    model_summary,
    save_model,
)
from ._volume_files import (
    VolumeData,
    is_volume_file,
    iter_volumes,
    read_volume,
    read_volume_mask,
    write_volume,
)

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "MODEL_FORMAT",
    "ImageData",
    "PathLike",
    "VolumeData",
    "atomic_write",
    "fingerprint",
    "format_for_path",
    "image_extensions",
    "is_volume_file",
    "iter_volumes",
    "load_model",
    "model_summary",
    "read_image",
    "read_mask",
    "read_volume",
    "read_volume_mask",
    "save_model",
    "write_image",
    "write_volume",
]
