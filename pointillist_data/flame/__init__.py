"""FLAME head model without chumpy: assets, teeth, forward pass, face frames, parameters, demo head."""

from .asset import FlameAsset, FlameFileError, LandmarkEmbedding, load_flame_asset, save_flame_asset
from .demo_head import build_demo_asset, bundled_flame_basis, demo_asset_path, resolve_flame_asset
from .frames import FaceFrames, face_frames, global_to_local, local_to_global
from .model import FlameModel
from .params import FlameParams, FlameParamsError
from .unpickle import UnsafePickleError

__all__ = [
    "FlameAsset", "FlameFileError", "LandmarkEmbedding", "load_flame_asset", "save_flame_asset",
    "build_demo_asset", "demo_asset_path", "bundled_flame_basis", "resolve_flame_asset",
    "FaceFrames", "face_frames", "global_to_local", "local_to_global", "FlameModel",
    "FlameParams", "FlameParamsError", "UnsafePickleError",
]
