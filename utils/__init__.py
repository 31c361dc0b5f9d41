"""Evaluation, logging and small helpers shared by main.py and the tools."""
from .errors import UserError
