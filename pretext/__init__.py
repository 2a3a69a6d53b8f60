"""Shared core of the suite: task protocol, registry, losses, heads and the training engine."""

from pretext.errors import UserError
from pretext.registry import (
    create_encoder,
    create_task,
    get_data_kind,
    list_data_kinds,
    list_encoders,
    list_tasks,
    register_data,
    register_encoder,
    register_task,
)

__all__ = [
    "UserError",
    "create_encoder",
    "create_task",
    "get_data_kind",
    "list_data_kinds",
    "list_encoders",
    "list_tasks",
    "register_data",
    "register_encoder",
    "register_task",
]
__version__ = "0.1.0"
