"""Real pipeline executor under mpiexec with mpi4py and PyTorch (see issue: Executor)."""
