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
        # --engine keras-tuner; Keras Tuner 1.4.8 fails every trial without tensorboard.
        "keras-tuner>=1.4.8",
        "tensorboard>=2.20",
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
        "pyyaml>=6.0",
        "filelock>=3.12",
        # fmsearch explain: LIME's image explainer, and the SLIC superpixels it is given.
        "lime>=0.2.0.1",
        "scikit-image>=0.22",
    ],
    extras_require={
        # Optuna's GPSampler runs on PyTorch; the CPU build is enough (see the Makefile).
        "gp": ["torch>=2.4"],
        # The CPU build: 6 MB against the CUDA build's 300 MB (GPU users: pip install xgboost).
        "xgboost": ["xgboost-cpu>=2.1"],
        # fmsearch explain --embedding umap.
        "umap": ["umap-learn>=0.5"],
        # fmsearch dashboard: Optuna's own web dashboard over the study storage.
        "dashboard": ["optuna-dashboard>=0.17"],
        # The UI test drives Debian's chromium through its chromedriver.
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            # The layering contracts in pyproject.toml (make lint, tests/test_layers.py).
            "import-linter>=2.1",
            "xgboost-cpu>=2.1",
            "umap-learn>=0.5",
            "selenium>=4.20",
            # The Kubernetes manifests, checked against the API's schemas offline.
            "kubernetes-validate>=1.30",
        ],
    },
    entry_points={"console_scripts": ["fmsearch=search.cli:main"]},
)
