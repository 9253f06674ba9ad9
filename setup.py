"""ringps: gradient aggregation strategies (root, host, blocked, ring, PS) side by side."""
from setuptools import Extension, setup

# The shared-memory transport's board (small allreduces and metadata exchanges in one C
# call). Optional: without a C compiler the install still succeeds and every call takes the
# Python path (collectives/transport/board.py says which).
BOARD = Extension("collectives.transport._board", ["collectives/transport/_board.c"],
                  extra_compile_args=["-O3"], optional=True)

setup(
    name="ringps",
    version="0.1.0",
    description="Collective communication over MPI: root, host, blocked, ring and "
                "parameter-server allreduce, measured side by side",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["collectives", "collectives.transport", "ps", "topology", "bench"],
    ext_modules=[BOARD],
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
