"""ringps: gradient aggregation strategies (root, host, blocked, ring, PS) side by side."""
from setuptools import setup

setup(
    name="ringps",
    version="0.1.0",
    description="Collective communication over MPI: root, host, blocked, ring and "
                "parameter-server allreduce, measured side by side",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["collectives", "collectives.transport", "ps", "topology", "bench"],
    install_requires=["numpy>=1.22", "mpi4py>=3.1"],
    extras_require={
        "torch": ["torch>=2.1"],
        "plot": ["matplotlib>=3.5"],
        "bench": ["matplotlib>=3.5", "tqdm>=4"],
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        "test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "mpich"],
    },
)
