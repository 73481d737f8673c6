"""fmsearch: hyperparameter search for Fashion-MNIST classifiers, on Optuna and MLflow."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fmsearch",
    version="0.1.0",
    description="Hyperparameter search for Fashion-MNIST classifiers, tracked in MLflow",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["search*", "spaces*", "runners*"]),
    install_requires=[
        "optuna>=5.0",
        "optuna-integration>=5.0",
        # 3.17 is past the artifact path-traversal and pickle-loading advisories.
        "mlflow>=3.17,<4",
        "tensorflow>=2.21",
        "keras>=3.15",
        "scikit-learn>=1.9",
        "numpy>=2.0",
        "pandas>=2.2",
        "matplotlib>=3.9",
        "pillow>=10.0",
        "sqlalchemy>=2.0",
        "click>=8.1",
        "tqdm>=4.66",
        "cmaes>=0.11",
        "scipy>=1.13",
        "psycopg[binary]>=3.2",
        "pymysql>=1.1",
    ],
    extras_require={
        # Optuna's GPSampler runs on PyTorch; the CPU build is enough (see the Makefile).
        "gp": ["torch>=2.4"],
        "test": ["pytest>=8.0", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["fmsearch=search.cli:main"]},
)
