"""Unlearning methods, one file each, behind a registry (`get_method(name)`)."""

from eul.methods import eul, finetune, retrain, reverse_gradient  # noqa: F401  (registration)
from eul.methods.base import METHODS, ForgetTask, UnlearnResult, get_method, register_method
from eul.methods.eul import EUL, EULConfig

__all__ = [
    "EUL",
    "METHODS",
    "EULConfig",
    "ForgetTask",
    "UnlearnResult",
    "get_method",
    "register_method",
]
