"""Reproduction of "Disentangling Adversarial Robustness and Generalization" (Stutz, Hein, Schiele, CVPR 2019).

Every stage of the Snakemake workflow is a thin adapter over a function of this package; the package
itself knows nothing of Snakemake, so the tests call exactly what the workflow runs.
"""

import os

__version__ = "0.1.0"

# Every HDF5 file here is written once under a temporary name and renamed when complete, and the workflow starts
# no reader before its writer has finished, so HDF5's file locks guard nothing; on shared file systems without
# lock support (NFS, Lustre) they only make every open fail. HDF5 reads this at each open; a user's setting wins.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
