"""Packaging that pyproject.toml cannot say: `policies/` (the single source of the default
policy set, also shipped as a ConfigMap) is installed as the package `webhook.policies`."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["webhook", "webhook.*"]), "webhook.policies"],
    package_dir={"webhook.policies": "policies"},
    package_data={
        "webhook": ["py.typed", "data/*.yaml"],
        "webhook.audit": ["*.yaml"],
        "webhook.policies": ["*.yaml"],
    },
)
