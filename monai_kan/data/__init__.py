"""Data for monai-kan, one module per job.

Reading and writing datasets (the Medical Segmentation Decathlon layout, ``dataset.json`` + ``imagesTr/`` ...):

* :mod:`~monai_kan.data.msd`: the one ``dataset.json`` reader (:func:`read_dataset_json`, :func:`read_datalist`, on
  top of MONAI's ``load_decathlon_datalist``), the checked segmentation data lists (:func:`load_msd_datalist`,
  :func:`check_case`, :class:`CheckLabeld`) and :func:`split_datalist`.
* :mod:`~monai_kan.data.msd_writer`: the one writer: :func:`new_msd_folder` publishes a folder atomically (written
  beside the target, then renamed; usual ``mkdir`` permissions); :func:`write_slice_dataset` for 2D image sets.

Data sets (all written through :mod:`~monai_kan.data.msd_writer`):

* :mod:`~monai_kan.data.phantoms`: synthetic organ-with-lesion phantoms for the KM-UNet segmentation bundles.
* :mod:`~monai_kan.data.mni152`: the nilearn MNI152 template, found and loaded in one place; its T1 slices for the
  KAE denoising bundle.
* :mod:`~monai_kan.data.synthetic_slices`: synthetic CT-like 2D slices for the KAE denoising bundle.

Pipelines:

* :mod:`~monai_kan.data.transforms`: salt-and-pepper noise (one rule, explicit total ``amount``), the denoising
  bundle's fixed noisy copies (:func:`add_noise`), loading whose errors name the file (:class:`CheckedLoadImaged`,
  MONAI's ``LoadImaged`` with channel checks; :class:`LoadSlice2Dd` for 2D slices).

Data errors are :class:`DatasetError` (a ``ValueError``; :class:`DatasetNotFoundError` is also a
``FileNotFoundError``, :class:`DatasetReadError` also a ``RuntimeError``), one line naming the file and what was
expected; :func:`monai_kan.handlers.exit_on_data_error` makes a bundle command end with that line and exit status 1.
* :mod:`~monai_kan.data.denoising_splits`: the denoising bundle's train / validation / test lists and noisy pairs.
"""

from .denoising_splits import IMAGE_EXTENSIONS, denoising_datalist, image_files, noisy_pairs, prepare_denoising_data
from .mni152 import MNI152_INSTALL_HINT, find_mni152_template, load_mni152, make_mni152_dataset
from .msd import (
    CheckLabeld,
    DatasetError,
    DatasetNotFoundError,
    DatasetReadError,
    check_case,
    load_msd_datalist,
    read_datalist,
    read_dataset_json,
    split_datalist,
)
from .msd_writer import FolderExistsError, new_msd_folder, write_slice_dataset
from .phantoms import PHANTOM_LABELS, default_phantom_params, ensure_phantom_dataset, make_phantom, write_phantom_dataset
from .synthetic_slices import SYNTHETIC_SHAPES, make_synthetic_dataset, synthetic_slice
from .transforms import (
    CheckedLoadImaged,
    LoadSlice2Dd,
    RandSaltPepperNoise,
    RandSaltPepperNoised,
    add_noise,
    load_slice,
    salt_and_pepper_noise,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MNI152_INSTALL_HINT",
    "PHANTOM_LABELS",
    "SYNTHETIC_SHAPES",
    "CheckLabeld",
    "CheckedLoadImaged",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetReadError",
    "FolderExistsError",
    "LoadSlice2Dd",
    "RandSaltPepperNoise",
    "RandSaltPepperNoised",
    "add_noise",
    "check_case",
    "default_phantom_params",
    "denoising_datalist",
    "ensure_phantom_dataset",
    "find_mni152_template",
    "image_files",
    "load_mni152",
    "load_msd_datalist",
    "load_slice",
    "make_mni152_dataset",
    "make_phantom",
    "make_synthetic_dataset",
    "new_msd_folder",
    "noisy_pairs",
    "prepare_denoising_data",
    "read_dataset_json",
    "read_datalist",
    "salt_and_pepper_noise",
    "split_datalist",
    "synthetic_slice",
    "write_phantom_dataset",
    "write_slice_dataset",
]
