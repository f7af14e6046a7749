# setuptools needs setup.py for cffi_modules: the C namespace stage is compiled at install time.
from setuptools import setup

setup(cffi_modules=["corral/nsenter/build.py:ffibuilder"])
