"""Utilities: safe (weights-only) checkpoint loading and demo data generation.

Importing this package registers :func:`load_from_local_safe` as MMEngine's loader for
local checkpoint files (see :mod:`nfnets_mm.utils.safe_checkpoint`).
"""
from .safe_checkpoint import (ALLOWLIST, UnsafeCheckpointError, allowlisted_names,
                              load_from_local_safe, safe_load)
from .demo_data import (CLS_CLASSES, COCO_CLASSES, DemoDataError, ensure_demo_data,
                        make_classification_demo, make_coco_demo,
                        validate_coco_annotations, validate_demo_data)

__all__ = [
    'ALLOWLIST', 'UnsafeCheckpointError', 'allowlisted_names', 'load_from_local_safe',
    'safe_load', 'CLS_CLASSES', 'COCO_CLASSES', 'DemoDataError', 'ensure_demo_data',
    'make_classification_demo', 'make_coco_demo', 'validate_coco_annotations',
    'validate_demo_data'
]
