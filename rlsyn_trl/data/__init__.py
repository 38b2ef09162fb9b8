"""Identity benchmarks as ``datasets`` builders, registered by name, the user's own identity data (a Hub dataset
id or a local folder laid out like one, :mod:`.user_data`) through the same entry points, and the shared
preprocessing; :func:`stream_identity_dataset` reads the large ones as streams (:mod:`.streaming`).

Names are imported on first use: the split options' checks (:mod:`.orl_split`, :mod:`.option_checks`) import
neither ``datasets`` nor an image library, so a command can refuse a bad ``--shots`` before loading them.
"""

from ..utils.lazy import lazy_attributes

_LAZY = {
    "IDENTITY_BUILDERS": "registry",
    "SPLIT_OPTION_NAMES": "registry",
    "USER_DATA_OPTIONS": "registry",
    "check_disjoint_identities": "registry",
    "check_identity_options": "registry",
    "identity_builder": "registry",
    "identity_names": "registry",
    "load_identity_dataset": "registry",
    "register_identity_builder": "registry",
    "stream_identity_dataset": "registry",
    "StreamedSplit": "streaming",
    "CasiaWebFace": "casia_webface",
    "Cuhk03Np": "cuhk03",
    "FaceVerification": "face_verification",
    "Rfw": "face_verification",
    "Market1501": "market1501",
    "OrlFaces": "orl",
    "find_orl_root": "orl",
    "private_split": "orl_split",
    "SyntheticFaces": "synthetic_faces",
    "UserIdentities": "user_data",
    "is_user_dataset": "user_data",
    "locate_user_dataset": "user_data",
    "dataset_to_tensors": "preprocessing",
    "preprocess_images": "preprocessing",
    "tensor_to_pil": "preprocessing",
    "to_model_range": "preprocessing",
    "to_unit_range": "preprocessing",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
