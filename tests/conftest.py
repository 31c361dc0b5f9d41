"""Loaded by pytest before any test module."""
# Before any test imports mxnet, gluoncv or mxboard: on Python 3.12 and 3.13 (numpy 1.26, 2.2) MXNet
# 1.9.1 imports only with the old numpy names this module puts back (it sets nothing on numpy 1.23.5).
import utils.mxnet_compat  # noqa: F401
