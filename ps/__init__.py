"""ringps parameter server (sharded PS over MPI; the `ps` and `hierarchical` strategies). See DESIGN.md."""
