"""Installs refseg-tf: referring image segmentation for TensorFlow 2 / Keras 3."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = {}
exec((HERE / "refseg_tf" / "version.py").read_text(), VERSION)

CONSOLE_SCRIPTS = [
    "refseg-synthetic=refseg_tf.synthetic:run",
    "refseg-convert=refseg_tf.convert:run",
    "refseg-train=refseg_tf.train:run",
    "refseg-evaluate=refseg_tf.evaluate:run",
    "refseg-predict=refseg_tf.predict:run",
    "refseg-demo=refseg_tf.demo:run",
    "refseg-export=refseg_tf.export_model:run",
    "refseg-serve=refseg_tf.serve:run",
    "refseg-import=refseg_tf.import_weights:run",
]
# notebooks/quickstart.ipynb in Jupyter, and its test (nbclient runs it in an ipykernel).
NOTEBOOK = ["nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29"]
# tests/test_serve.py drives the demo page in Debian's chromium + chromium-driver.
BROWSER_TEST = ["selenium>=4.20"]

setup(
    name="refseg-tf",
    version=VERSION["__version__"],
    description="Referring image segmentation (LSTM-CNN, RMI, RRN, LTS, ASGN) for TensorFlow 2 / Keras 3",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Only the library: the top-level `datasets/` folder holds docs and scripts and must not
    # claim the import name of the popular PyPI package `datasets`.
    packages=find_packages(include=["refseg_tf", "refseg_tf.*"]),
    # The page of refseg-serve (refseg_tf/webdemo/static: index.html, app.js, style.css).
    package_data={"refseg_tf.webdemo": ["static/*"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "pycocotools>=2.0.7",
        "absl-py>=2.0",
        "ml_collections>=0.1.1",
        "pillow>=10.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "scipy>=1.11",
    ],
    extras_require={
        "tfds": ["tensorflow-datasets>=4.9.4", "importlib_resources>=6.0"],
        "crf": ["pydensecrf2>=1.1"],
        # LiteRT runtime, the TF Serving request protos, and the REST client of export/client.py.
        "export": ["ai-edge-litert>=2.0", "tensorflow-serving-api>=2.16", "requests>=2.31"],
        "notebook": NOTEBOOK,
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "scipy>=1.11",
            "tensorflow-datasets>=4.9.4",
            "importlib_resources>=6.0",
            "ai-edge-litert>=2.0",
            "tensorflow-serving-api>=2.16",
            "requests>=2.31",
            *NOTEBOOK,
            *BROWSER_TEST,
        ],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
