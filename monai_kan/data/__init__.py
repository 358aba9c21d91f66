"""Data for monai-kan: synthetic phantoms, MSD layout reading and checks, registry data, KAE benchmark images."""

from .denoising_data import LoadSlice2Dd, RandSaltPepperNoise, RandSaltPepperNoised
from .mnist import ImageSplits, load_fashion_mnist, load_mnist, read_idx
from .msd import CheckLabeld, DatasetError, check_case, load_msd_datalist, read_dataset_json, split_datalist
from .phantoms import PHANTOM_LABELS, default_phantom_params, ensure_phantom_dataset, make_phantom, write_phantom_dataset
from .registry_data import convert_mni152, convert_pyradiomics
from .synthetic import make_blob_images

__all__ = [
    "PHANTOM_LABELS",
    "CheckLabeld",
    "DatasetError",
    "ImageSplits",
    "LoadSlice2Dd",
    "RandSaltPepperNoise",
    "RandSaltPepperNoised",
    "check_case",
    "convert_mni152",
    "convert_pyradiomics",
    "default_phantom_params",
    "ensure_phantom_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_msd_datalist",
    "make_blob_images",
    "make_phantom",
    "read_dataset_json",
    "read_idx",
    "split_datalist",
    "write_phantom_dataset",
]
